//! Whether a request is in English, the one language the embedded analyst
//! reads; for another, a guess at which, so the question asked back can
//! name it. A request in another language is asked to be restated, never
//! guessed at.

use super::text::Token;

/// Common English words that carry no goal (function words and the
/// everyday words of requests), for telling English from other languages.
const ENGLISH: &[&str] = &[
    "the",
    "a",
    "an",
    "of",
    "to",
    "for",
    "and",
    "or",
    "in",
    "on",
    "by",
    "with",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "our",
    "my",
    "we",
    "i",
    "you",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "me",
    "us",
    "please",
    "can",
    "could",
    "should",
    "would",
    "will",
    "how",
    "what",
    "which",
    "why",
    "when",
    "where",
    "who",
    "much",
    "many",
    "make",
    "from",
    "at",
    "last",
    "past",
    "under",
    "over",
    "less",
    "more",
    "than",
    "just",
    "only",
    "workload",
    "workloads",
    "service",
    "services",
    "model",
    "models",
    "request",
    "requests",
    "token",
    "tokens",
    "month",
    "week",
    "day",
    "days",
    "hours",
    "hour",
    "per",
    "all",
    "any",
    "some",
    "get",
    "give",
    "let",
    "want",
    "need",
    "about",
    "into",
    "as",
    "if",
    "so",
    "but",
    "there",
    "here",
    "have",
    "has",
    "had",
    "do",
    "does",
    "did",
    "them",
    "they",
    "their",
    "your",
    "also",
    "too",
    "very",
    "now",
    "then",
    "out",
    "up",
    "down",
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank",
    "ok",
    "okay",
    "yes",
    "right",
    "go",
    "ahead",
    "data",
    "now",
    "new",
    "old",
    "use",
    "using",
    "used",
    "without",
    "while",
    "keep",
    "same",
    "other",
    "another",
    "each",
    "every",
    "both",
    "between",
    "like",
    "than",
    "team",
    "users",
    "traffic",
    "offline",
    "app",
    "prod",
    "production",
    "api",
    "gpu",
    "gpus",
    "is",
    "am",
    "being",
    "ours",
    "mine",
    "whole",
    "entire",
    "total",
    "currently",
    "today",
    "yesterday",
    "since",
    "ago",
    "before",
    "after",
    "during",
    "within",
    "below",
    "above",
    "spike",
    "spikes",
    "happened",
    "happen",
    "going",
    "where",
    "cheaper",
    "vs",
];

/// Frequent words of the languages requests most often come in, none of
/// them an English word.
const OTHERS: &[(&str, &[&str])] = &[
    (
        "Spanish",
        &[
            "el",
            "los",
            "las",
            "del",
            "que",
            "para",
            "por",
            "con",
            "una",
            "es",
            "costo",
            "costos",
            "coste",
            "costes",
            "reducir",
            "bajar",
            "latencia",
            "mostrar",
            "muestra",
            "muéstrame",
            "cómo",
            "más",
            "menos",
            "nuestro",
            "nuestra",
            "gastos",
            "carga",
            "mejorar",
            "calidad",
            "días",
            "últimos",
            "semana",
            "cuánto",
            "favor",
            "podemos",
            "quiero",
        ],
    ),
    (
        "French",
        &[
            "le",
            "les",
            "des",
            "du",
            "une",
            "et",
            "pour",
            "avec",
            "est",
            "réduire",
            "coût",
            "coûts",
            "montrer",
            "montre",
            "charge",
            "nous",
            "notre",
            "nos",
            "combien",
            "moins",
            "baisser",
            "qualité",
            "latence",
            "derniers",
            "jours",
            "semaine",
            "dépenses",
            "améliorer",
            "je",
            "veux",
            "pouvez",
            "vous",
            "s'il",
            "plaît",
        ],
    ),
    (
        "German",
        &[
            "der",
            "die",
            "das",
            "und",
            "ist",
            "nicht",
            "wie",
            "kosten",
            "reduzieren",
            "senken",
            "zeige",
            "zeigen",
            "unsere",
            "unser",
            "unseren",
            "für",
            "mit",
            "bitte",
            "wir",
            "ich",
            "den",
            "dem",
            "des",
            "latenz",
            "qualität",
            "verbessern",
            "letzten",
            "tage",
            "woche",
            "viel",
            "kann",
            "können",
            "möchte",
            "ausgaben",
            "verringern",
        ],
    ),
    (
        "Portuguese",
        &[
            "os",
            "do",
            "da",
            "dos",
            "das",
            "com",
            "custo",
            "custos",
            "reduzir",
            "nosso",
            "nossa",
            "é",
            "não",
            "mostrar",
            "mostre",
            "qualidade",
            "melhorar",
            "últimos",
            "dias",
            "semana",
            "quanto",
            "gastos",
            "podemos",
            "quero",
            "diminuir",
        ],
    ),
    (
        "Italian",
        &[
            "il",
            "lo",
            "gli",
            "di",
            "della",
            "dello",
            "costi",
            "ridurre",
            "nostro",
            "nostra",
            "mostra",
            "mostrami",
            "qualità",
            "latenza",
            "migliorare",
            "ultimi",
            "giorni",
            "settimana",
            "quanto",
            "spese",
            "possiamo",
            "voglio",
            "abbassare",
        ],
    ),
    (
        "Dutch",
        &[
            "het",
            "een",
            "van",
            "voor",
            "kosten",
            "verlagen",
            "onze",
            "hoe",
            "laat",
            "zien",
            "kwaliteit",
            "verbeteren",
            "laatste",
            "dagen",
            "week",
            "hoeveel",
            "uitgaven",
            "kunnen",
            "willen",
            "wij",
        ],
    ),
];

/// True for a common English word.
pub fn english_word(word: &str) -> bool {
    ENGLISH.contains(&word)
}

/// The language of a request that is not in English (`None`: English, or
/// too short to tell).
pub fn not_english(text: &str, tokens: &[Token]) -> Option<String> {
    let words: Vec<&str> = tokens
        .iter()
        .filter(|t| t.is_word())
        .map(|t| t.lower.as_str())
        .collect();
    let english = words
        .iter()
        .filter(|w| english_word(w) || super::vocab::known(w))
        .count();
    if let Some(script) = other_script(text) {
        if english < 3 {
            return Some(script.to_string());
        }
    }
    let (language, foreign) = OTHERS
        .iter()
        .map(|(lang, list)| (*lang, words.iter().filter(|w| list.contains(w)).count()))
        .max_by_key(|(_, n)| *n)?;
    (foreign >= 2 && foreign > english).then(|| language.to_string())
}

/// The script other than Latin a request is written in, if any (two
/// letters or more).
fn other_script(text: &str) -> Option<&'static str> {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for c in text
        .chars()
        .take(super::text::MAX_CHARS)
        .filter(|c| c.is_alphabetic())
    {
        let script = match c as u32 {
            0x0000..=0x024F | 0x1E00..=0x1EFF => continue,
            0x0370..=0x03FF => "Greek",
            0x0400..=0x04FF => "Russian or another language in Cyrillic script",
            0x0590..=0x05FF => "Hebrew",
            0x0600..=0x06FF => "Arabic",
            0x0900..=0x097F => "Hindi or another language in Devanagari script",
            0x0E00..=0x0E7F => "Thai",
            0x3040..=0x30FF => "Japanese",
            0xAC00..=0xD7AF | 0x1100..=0x11FF => "Korean",
            0x4E00..=0x9FFF => "Chinese or Japanese",
            _ => "a language netra does not read",
        };
        match counts.iter_mut().find(|(s, _)| *s == script) {
            Some((_, n)) => *n += 1,
            None => counts.push((script, 1)),
        }
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    // Japanese mixes kana and kanji: any kana names it.
    if counts.iter().any(|(s, _)| *s == "Japanese") {
        return (total >= 2).then_some("Japanese");
    }
    let (script, _) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    (total >= 2).then_some(script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::triage::text::tokens;

    fn lang(text: &str) -> Option<String> {
        not_english(text, &tokens(text))
    }

    #[test]
    fn other_languages_are_named() {
        assert_eq!(
            lang("Reducir los costos del workload chat-prod").as_deref(),
            Some("Spanish")
        );
        assert_eq!(
            lang("Réduire les coûts de chat-prod").as_deref(),
            Some("French")
        );
        assert_eq!(
            lang("Bitte die Kosten von chat-prod senken").as_deref(),
            Some("German")
        );
        assert_eq!(
            lang("降低 chat-prod 的成本").as_deref(),
            Some("Chinese or Japanese")
        );
        assert_eq!(lang("Cut the cost of workload chat-prod"), None);
        assert_eq!(lang("show el-nino workload"), None);
    }
}
