//! The agents' system prompts: versioned files under `prompts/`, compiled
//! into the build. A prompt's first line is `version: N`; the version
//! recorded with every call is `<name>/<N>+<first 8 hex digits of the
//! file's SHA-256>`, so an edit that forgets to bump `N` still changes it
//! (and a changed prompt never reuses a ledger answer given to the old one).

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::model::Phase;

/// One system prompt.
#[derive(Debug)]
pub struct Prompt {
    /// Its name (the file's stem).
    pub name: &'static str,
    /// The file's text, with the version line.
    file: &'static str,
    version: OnceLock<String>,
}

impl Prompt {
    const fn new(name: &'static str, file: &'static str) -> Self {
        Prompt {
            name,
            file,
            version: OnceLock::new(),
        }
    }

    /// The prompt without its version line.
    pub fn text(&self) -> &'static str {
        match self.file.split_once('\n') {
            Some((first, rest)) if first.starts_with("version:") => rest.trim_start(),
            _ => self.file,
        }
    }

    /// `<name>/<N>+<hash>`.
    pub fn version(&self) -> &str {
        self.version.get_or_init(|| {
            let n = self
                .file
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("version:"))
                .map_or("0", str::trim);
            let digest = Sha256::digest(self.file.as_bytes());
            let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
            format!("{}/{n}+{hash}", self.name)
        })
    }
}

/// The triage agent's prompt.
pub static TRIAGE: Prompt = Prompt::new(
    Phase::Triage.as_str(),
    include_str!("../../prompts/triage.md"),
);

/// The reporting agent's prompt.
pub static REPORTING: Prompt = Prompt::new(
    Phase::Reporting.as_str(),
    include_str!("../../prompts/reporting.md"),
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_the_file_and_its_content() {
        assert!(
            TRIAGE.version().starts_with("triage/2+"),
            "{}",
            TRIAGE.version()
        );
        assert!(!TRIAGE.text().starts_with("version"));
        assert_ne!(TRIAGE.version(), REPORTING.version());
    }
}
