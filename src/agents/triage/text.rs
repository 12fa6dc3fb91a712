//! The request as words: tokens (words, numbers, symbols) in clauses, each
//! word with the lemmas it may be an inflection of. Everything after reads
//! tokens, so words are matched whole, never as substrings.

/// The most characters of a request that are read (the rest is noted).
pub const MAX_CHARS: usize = 10_000;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Letters and digits, with inner `-`, `_` and `'` (`chat-prod`, `don't`).
    Word,
    /// A number (`5,000` → 5000, `1.5k` → 1500).
    Number(f64),
    /// One punctuation or currency character (`$`, `%`, `,`).
    Symbol(char),
}

/// One token of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// As written.
    pub raw: String,
    /// Lower-cased, British spellings made American (`minimise` → `minimize`).
    pub lower: String,
    /// Word, number or symbol.
    pub kind: Kind,
    /// The index of the clause the token is in.
    pub clause: usize,
}

impl Token {
    /// True for a word token.
    pub fn is_word(&self) -> bool {
        self.kind == Kind::Word
    }

    /// The number, for a number token.
    pub fn number(&self) -> Option<f64> {
        match self.kind {
            Kind::Number(n) => Some(n),
            _ => None,
        }
    }

    /// True for the symbol `c`.
    pub fn is_symbol(&self, c: char) -> bool {
        self.kind == Kind::Symbol(c)
    }
}

/// Units and magnitudes split off a number written against them (`2s`,
/// `1500ms`, `30%`, `48h`); any other letters keep the token a word (`4o`).
const NUMBER_SUFFIXES: &[&str] = &[
    "ms", "msec", "s", "sec", "secs", "h", "hr", "hrs", "hour", "hours", "d", "day", "days", "w",
    "wk", "wks", "week", "weeks", "min", "mins", "minute", "minutes", "mo", "month", "months",
    "pct", "percent", "x", "usd", "eur", "k",
];

/// Words that open a new clause (negation and guards do not reach past them).
const CLAUSE_WORDS: &[&str] = &[
    "but", "while", "whilst", "without", "keeping", "except", "although", "though", "however",
    "yet", "just", "only", "instead", "rather", "and", "also", "then", "so", "because", "whereas",
    "with",
];

/// Splits `text` into tokens (at most [`MAX_CHARS`] characters are read).
pub fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text
        .chars()
        .take(MAX_CHARS)
        .map(|c| match c {
            '\u{2019}' | '\u{2018}' | '`' => '\'',
            '\u{2013}' | '\u{2014}' => ',',
            c => c,
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() {
            let start = i;
            i += 1;
            while i < chars.len() && continues_word(&chars, start, i) {
                i += 1;
            }
            push_word(&mut out, &chars[start..i]);
        } else {
            if !c.is_whitespace()
                && !c.is_control()
                && (c.is_ascii_punctuation() || "€£≤≥".contains(c))
            {
                out.push(symbol(c));
            } else if c == '\n' {
                out.push(symbol('.'));
            }
            i += 1;
        }
    }
    number_clauses(&mut out);
    out
}

/// True when `chars[i]` continues the word that began at `start`.
fn continues_word(chars: &[char], start: usize, i: usize) -> bool {
    let c = chars[i];
    let next_alnum = chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
    let prev = chars[i - 1];
    let numeric_so_far = chars[start..i]
        .iter()
        .all(|c| c.is_ascii_digit() || *c == '.' || *c == ',');
    if c.is_alphanumeric() {
        return true;
    }
    match c {
        '-' | '_' | '\'' => next_alnum,
        '.' => prev.is_ascii_digit() && chars.get(i + 1).is_some_and(char::is_ascii_digit),
        ',' => {
            numeric_so_far
                && prev.is_ascii_digit()
                && chars.len() >= i + 4
                && chars[i + 1..i + 4].iter().all(char::is_ascii_digit)
                && !chars.get(i + 4).is_some_and(char::is_ascii_digit)
        }
        _ => false,
    }
}

fn symbol(c: char) -> Token {
    Token {
        raw: c.to_string(),
        lower: c.to_string(),
        kind: Kind::Symbol(c),
        clause: 0,
    }
}

fn word(raw: &str) -> Token {
    Token {
        raw: raw.to_string(),
        lower: americanized(&raw.to_lowercase()),
        kind: Kind::Word,
        clause: 0,
    }
}

/// Pushes a word, or a number and the unit written against it.
fn push_word(out: &mut Vec<Token>, chars: &[char]) {
    let raw: String = chars.iter().collect();
    let raw = raw
        .strip_suffix("'s")
        .or_else(|| raw.strip_suffix("'S"))
        .unwrap_or(&raw)
        .to_string();
    let digits: String = raw
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .collect();
    if digits.is_empty() || !digits.starts_with(|c: char| c.is_ascii_digit()) {
        out.push(word(&raw));
        return;
    }
    let Ok(value) = digits.replace(',', "").parse::<f64>() else {
        out.push(word(&raw));
        return;
    };
    let rest = raw[digits.len()..].trim_start_matches('-');
    let lower_rest = rest.to_lowercase();
    let number = |v: f64| Token {
        raw: digits.clone(),
        lower: digits.clone(),
        kind: Kind::Number(v),
        clause: 0,
    };
    if rest.is_empty() {
        out.push(number(value));
    } else if lower_rest == "k" {
        out.push(number(value * 1000.0));
    } else if NUMBER_SUFFIXES.contains(&lower_rest.as_str()) {
        out.push(number(value));
        out.push(word(rest));
    } else {
        out.push(word(&raw));
    }
}

/// British spellings read as American ones (`optimise`, `analyse`).
fn americanized(w: &str) -> String {
    const SWAPS: &[(&str, &str)] = &[
        ("optimis", "optimiz"),
        ("minimis", "minimiz"),
        ("maximis", "maximiz"),
        ("summaris", "summariz"),
        ("economis", "economiz"),
        ("prioritis", "prioritiz"),
        ("analys", "analyz"),
        ("utilis", "utiliz"),
    ];
    for (from, to) in SWAPS {
        if let Some(rest) = w.strip_prefix(from) {
            // `analysis` stays itself; `analyse`, `analysed` become `analyze…`.
            if *from == "analys" && rest.starts_with('i') {
                return w.to_string();
            }
            return format!("{to}{rest}");
        }
    }
    w.to_string()
}

/// Numbers the clauses: punctuation other than `$`, `%`, `/` and the
/// clause words end one.
fn number_clauses(tokens: &mut [Token]) {
    let mut clause = 0;
    for t in tokens.iter_mut() {
        let breaks = match t.kind {
            Kind::Symbol(c) => ".,;!?()[]:\"".contains(c),
            Kind::Word => CLAUSE_WORDS.contains(&t.lower.as_str()),
            Kind::Number(_) => false,
        };
        if breaks {
            clause += 1;
        }
        t.clause = clause;
    }
}

/// The lemmas `word` may be an inflection of, itself first (`reducing` →
/// `reduce`, `latencies` → `latency`, `cutting` → `cut`).
pub fn lemmas(word: &str) -> Vec<String> {
    let mut out = vec![word.to_string()];
    let mut add = |s: String| {
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    };
    if let Some(stem) = word.strip_suffix("ies") {
        add(format!("{stem}y"));
    }
    if let Some(stem) = word.strip_suffix("ied") {
        add(format!("{stem}y"));
    }
    for suffix in ["ing", "ed"] {
        if let Some(stem) = word.strip_suffix(suffix) {
            add(stem.to_string());
            add(format!("{stem}e"));
            let b = stem.as_bytes();
            if b.len() >= 2 && b[b.len() - 1] == b[b.len() - 2] {
                add(stem[..stem.len() - 1].to_string());
            }
        }
    }
    if let Some(stem) = word.strip_suffix("es") {
        add(stem.to_string());
    }
    if let Some(stem) = word.strip_suffix('s') {
        if !stem.ends_with('s') {
            add(stem.to_string());
        }
    }
    if let Some(stem) = word.strip_suffix('d') {
        add(stem.to_string());
    }
    if let Some(stem) = word.strip_suffix("ly") {
        add(stem.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Kind> {
        tokens(text).into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn numbers_units_and_ids() {
        assert_eq!(
            kinds("$5,000/mo"),
            vec![
                Kind::Symbol('$'),
                Kind::Number(5000.0),
                Kind::Symbol('/'),
                Kind::Word
            ]
        );
        assert_eq!(kinds("1500ms")[0], Kind::Number(1500.0));
        assert_eq!(kinds("$2.5k")[1], Kind::Number(2500.0));
        let t = tokens("workload:Chat-Prod's gpt-4o 2-hour");
        let lower: Vec<&str> = t.iter().map(|t| t.lower.as_str()).collect();
        assert_eq!(
            lower,
            vec!["workload", ":", "chat-prod", "gpt-4o", "2", "hour"]
        );
        assert_eq!(t[2].raw, "Chat-Prod");
        assert_eq!(tokens("Minimise")[0].lower, "minimize");
        assert_eq!(tokens("analysis")[0].lower, "analysis");
    }

    #[test]
    fn bad_input_does_not_panic() {
        let huge = "cut cost ".repeat(10_000);
        assert!(tokens(&huge).len() <= MAX_CHARS);
        assert!(tokens("\0\0 💸🔥 é\u{301} 9999999999999999999999999999 ,,, 1,2,3").len() < 20);
        assert!(tokens("").is_empty());
    }

    #[test]
    fn inflections_come_back_to_their_lemma() {
        assert!(lemmas("reducing").contains(&"reduce".to_string()));
        assert!(lemmas("latencies").contains(&"latency".to_string()));
        assert!(lemmas("cutting").contains(&"cut".to_string()));
        assert!(lemmas("lowered").contains(&"lower".to_string()));
        assert!(lemmas("costs").contains(&"cost".to_string()));
    }
}
