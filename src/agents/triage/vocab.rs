//! The words the embedded analyst knows: each goal's words and their
//! synonyms, the verbs that ask for a change or for a look, negation, and
//! the words that guard a goal instead of asking for it. A word is looked up
//! by its lemmas (inflections), a phrase word by word, and a misspelled word
//! by edit distance against the longer words of the vocabulary.

use super::text::{lemmas, Token};
use crate::agents::outputs::Priority;

/// What a word (or phrase) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// Names a goal (`cost`, `latency`).
    Goal(Priority),
    /// Names a goal and asks for it at once (`cheaper`, `too slow`).
    Better(Priority),
    /// Asks for a change or for recommendations (`reduce`, `optimize`).
    Change,
    /// Asks for advice, weaker than a change (`help`, `should we`).
    Advice,
    /// Asks to be shown something (`show`, `breakdown`, `compare`).
    Look,
    /// A measure of usage (`tokens`, `requests`): a look when nothing else
    /// is asked.
    Metric,
    /// A change in general (`change`, `touch`), as in "don't change anything".
    Generic,
    /// Negates its clause (`don't`, `not`, `never`).
    Negator,
    /// Protects what it is said of (`hurt`, `lose`, `exceed`, `keep`).
    Protect,
    /// Opens a clause that guards a goal (`keep`, `maintain`, `without`).
    Keep,
    /// A direction down or up, as in "keep costs down".
    Direction,
}

use Cue::*;
use Priority::{Cost, Latency, Quality, Throughput};

/// Phrases, matched word by word on lower-cased words before single words.
const PHRASES: &[(&[&str], Cue)] = &[
    (&["less", "expensive"], Better(Cost)),
    (&["more", "affordable"], Better(Cost)),
    (&["spend", "less"], Better(Cost)),
    (&["pay", "less"], Better(Cost)),
    (&["too", "much", "money"], Better(Cost)),
    (&["where", "the", "money", "goes"], Look),
    (&["where", "does", "the", "money", "go"], Look),
    (&["cost", "effective"], Better(Cost)),
    (&["cost-effective"], Better(Cost)),
    (&["time", "to", "first", "token"], Goal(Latency)),
    (&["response", "time"], Goal(Latency)),
    (&["response", "times"], Goal(Latency)),
    (&["speed", "up"], Better(Latency)),
    (&["speed", "it", "up"], Better(Latency)),
    (&["speed", "them", "up"], Better(Latency)),
    (&["speed", "things", "up"], Better(Latency)),
    (&["too", "slow"], Better(Latency)),
    (&["take", "too", "long"], Better(Latency)),
    (&["takes", "too", "long"], Better(Latency)),
    (&["taking", "too", "long"], Better(Latency)),
    (&["better", "answers"], Better(Quality)),
    (&["better", "model"], Better(Quality)),
    (&["bigger", "model"], Better(Quality)),
    (&["stronger", "model"], Better(Quality)),
    (&["smarter", "model"], Better(Quality)),
    (&["more", "accurate"], Better(Quality)),
    (&["wrong", "answers"], Better(Quality)),
    (&["rate", "limit"], Better(Throughput)),
    (&["rate", "limits"], Better(Throughput)),
    (&["rate", "limited"], Better(Throughput)),
    (&["rate-limited"], Better(Throughput)),
    (&["rate-limit"], Better(Throughput)),
    (&["rate-limits"], Better(Throughput)),
    (&["respond", "within"], Better(Latency)),
    (&["respond", "in"], Better(Latency)),
    (&["requests", "per", "second"], Goal(Throughput)),
    (&["requests", "per", "minute"], Goal(Throughput)),
    (&["tokens", "per", "minute"], Goal(Throughput)),
    (&["tokens", "per", "second"], Goal(Throughput)),
    (&["handle", "more"], Better(Throughput)),
    (&["keep", "up", "with"], Better(Throughput)),
    (&["scale", "up"], Better(Throughput)),
    (&["scale", "out"], Better(Throughput)),
    (&["break", "down"], Look),
    (&["help", "me", "understand"], Look),
    (&["help", "me", "see"], Look),
    (&["give", "me"], Look),
    (&["what", "are"], Look),
    (&["what", "is"], Look),
    (&["what's"], Look),
    (&["whats"], Look),
    (&["way", "to"], Advice),
    (&["ways", "to"], Advice),
    (&["no", "higher", "than"], Protect),
    (&["no", "more", "than"], Protect),
    (&["no", "greater", "than"], Protect),
    (&["no", "longer", "than"], Protect),
    (&["no", "slower", "than"], Protect),
    (&["not", "more", "than"], Protect),
    (&["not", "over"], Protect),
    (&["cope", "with"], Better(Throughput)),
    (&["can't", "keep", "up"], Better(Throughput)),
    (&["cannot", "keep", "up"], Better(Throughput)),
    (&["not", "keeping", "up"], Better(Throughput)),
    (&["out", "of", "control"], Direction),
    (&["through", "the", "roof"], Direction),
    (&["how", "much"], Look),
    (&["how", "many"], Look),
    (&["what", "did"], Look),
    (&["tell", "me"], Look),
    (&["look", "at"], Look),
    (&["walk", "me", "through"], Look),
    (&["bring", "down"], Change),
    (&["get", "down"], Change),
    (&["should", "we"], Advice),
    (&["should", "i"], Advice),
    (&["can", "we"], Advice),
    (&["could", "we"], Advice),
    (&["how", "can"], Advice),
    (&["how", "do", "we"], Advice),
    (&["how", "do", "i"], Advice),
    (&["how", "to"], Advice),
    (&["what", "can"], Advice),
    (&["is", "it", "worth"], Advice),
    (&["worth", "it"], Advice),
    (&["make", "sense"], Advice),
    (&["would", "it", "help"], Advice),
    (&["right", "size"], Change),
    (&["self", "host"], Change),
    (&["at", "least"], Protect),
    (&["as", "good"], Protect),
    (&["no", "worse"], Protect),
    (&["no", "matter"], Negator),
    (&["regardless", "of"], Negator),
];

/// Single words by lemma.
const WORDS: &[(&str, Cue)] = &[
    // Cost.
    ("cost", Goal(Cost)),
    ("spend", Goal(Cost)),
    ("spent", Goal(Cost)),
    ("bill", Goal(Cost)),
    ("billing", Goal(Cost)),
    ("invoice", Goal(Cost)),
    ("money", Goal(Cost)),
    ("price", Goal(Cost)),
    ("pricing", Goal(Cost)),
    ("budget", Goal(Cost)),
    ("dollar", Goal(Cost)),
    ("expense", Goal(Cost)),
    ("finops", Goal(Cost)),
    ("usd", Goal(Cost)),
    ("cheap", Better(Cost)),
    ("cheaper", Better(Cost)),
    ("cheapest", Better(Cost)),
    ("cheapen", Better(Cost)),
    ("save", Better(Cost)),
    ("saving", Better(Cost)),
    ("savings", Better(Cost)),
    ("economize", Better(Cost)),
    ("economical", Better(Cost)),
    ("affordable", Better(Cost)),
    ("expensive", Better(Cost)),
    ("costly", Better(Cost)),
    ("pricey", Better(Cost)),
    ("overspend", Better(Cost)),
    ("overspending", Better(Cost)),
    ("frugal", Better(Cost)),
    // Latency.
    ("latency", Goal(Latency)),
    ("p50", Goal(Latency)),
    ("p90", Goal(Latency)),
    ("p95", Goal(Latency)),
    ("p99", Goal(Latency)),
    ("ttft", Goal(Latency)),
    ("speed", Goal(Latency)),
    ("responsiveness", Goal(Latency)),
    ("delay", Goal(Latency)),
    ("lag", Goal(Latency)),
    ("fast", Better(Latency)),
    ("faster", Better(Latency)),
    ("fastest", Better(Latency)),
    ("quick", Better(Latency)),
    ("quicker", Better(Latency)),
    ("snappy", Better(Latency)),
    ("snappier", Better(Latency)),
    ("speedup", Better(Latency)),
    ("accelerate", Better(Latency)),
    ("slow", Better(Latency)),
    ("slower", Better(Latency)),
    ("sluggish", Better(Latency)),
    ("laggy", Better(Latency)),
    ("responsive", Better(Latency)),
    // Quality.
    ("quality", Goal(Quality)),
    ("accuracy", Goal(Quality)),
    ("accurate", Goal(Quality)),
    ("correctness", Goal(Quality)),
    ("eval", Goal(Quality)),
    ("smarter", Better(Quality)),
    ("hallucinate", Better(Quality)),
    ("hallucination", Better(Quality)),
    ("upgrade", Better(Quality)),
    ("dumb", Better(Quality)),
    // Throughput.
    ("throughput", Goal(Throughput)),
    ("capacity", Goal(Throughput)),
    ("ratelimit", Goal(Throughput)),
    ("rps", Goal(Throughput)),
    ("qps", Goal(Throughput)),
    ("rpm", Goal(Throughput)),
    ("tpm", Goal(Throughput)),
    ("concurrency", Goal(Throughput)),
    ("peak", Goal(Throughput)),
    ("burst", Goal(Throughput)),
    ("headroom", Goal(Throughput)),
    ("scalability", Goal(Throughput)),
    ("scale", Better(Throughput)),
    ("throttle", Better(Throughput)),
    ("throttling", Better(Throughput)),
    ("429", Better(Throughput)),
    ("bottleneck", Better(Throughput)),
    // Changes.
    ("reduce", Change),
    ("reduction", Change),
    ("cut", Change),
    ("lower", Change),
    ("decrease", Change),
    ("minimize", Change),
    ("trim", Change),
    ("shrink", Change),
    ("slash", Change),
    ("halve", Change),
    ("shave", Change),
    ("optimize", Change),
    ("optimization", Change),
    ("improve", Change),
    ("boost", Change),
    ("increase", Change),
    ("maximize", Change),
    ("raise", Change),
    ("tune", Change),
    ("right-size", Change),
    ("rightsize", Change),
    ("right-sizing", Change),
    ("rightsizing", Change),
    ("downsize", Change),
    ("downgrade", Better(Cost)),
    ("switch", Change),
    ("migrate", Change),
    ("self-host", Change),
    ("selfhost", Change),
    ("self-hosting", Change),
    ("batch", Change),
    ("batching", Change),
    ("cache", Change),
    ("caching", Change),
    ("route", Change),
    ("routing", Change),
    ("compress", Change),
    ("fix", Change),
    ("better", Change),
    ("bring", Change),
    ("help", Advice),
    ("suggest", Advice),
    ("suggestion", Advice),
    ("recommend", Advice),
    ("recommendation", Advice),
    ("advice", Advice),
    ("advise", Advice),
    ("idea", Advice),
    // Looks.
    ("show", Look),
    ("display", Look),
    ("breakdown", Look),
    ("report", Look),
    ("summary", Look),
    ("summarize", Look),
    ("overview", Look),
    ("describe", Look),
    ("analyze", Look),
    ("analysis", Look),
    ("analytics", Look),
    ("trend", Look),
    ("usage", Look),
    ("stats", Look),
    ("statistic", Look),
    ("metric", Look),
    ("profile", Look),
    ("compare", Look),
    ("comparison", Look),
    ("versus", Look),
    ("vs", Look),
    ("list", Look),
    ("chart", Look),
    ("graph", Look),
    ("dashboard", Look),
    ("explain", Look),
    ("audit", Look),
    ("review", Look),
    ("check", Look),
    ("see", Look),
    ("view", Look),
    ("inspect", Look),
    ("examine", Look),
    ("detail", Look),
    ("understand", Look),
    ("distribution", Look),
    ("histogram", Look),
    ("number", Metric),
    ("token", Metric),
    ("request", Metric),
    ("call", Metric),
    ("model", Metric),
    ("prompt", Metric),
    ("volume", Metric),
    ("traffic", Metric),
    // A change in general.
    ("change", Generic),
    ("modify", Generic),
    ("alter", Generic),
    ("touch", Generic),
    ("do", Generic),
    ("apply", Generic),
    // Negation.
    ("not", Negator),
    ("no", Negator),
    ("never", Negator),
    ("don't", Negator),
    ("dont", Negator),
    ("doesn't", Negator),
    ("doesnt", Negator),
    ("didn't", Negator),
    ("won't", Negator),
    ("wont", Negator),
    ("shouldn't", Negator),
    ("mustn't", Negator),
    ("cannot", Negator),
    ("can't", Negator),
    ("isn't", Negator),
    ("aren't", Negator),
    ("nothing", Negator),
    ("none", Negator),
    ("neither", Negator),
    ("nor", Negator),
    ("avoid", Negator),
    ("regardless", Negator),
    ("irrelevant", Negator),
    // Protecting.
    ("hurt", Protect),
    ("harm", Protect),
    ("worsen", Protect),
    ("worse", Protect),
    ("lose", Protect),
    ("loss", Protect),
    ("losing", Protect),
    ("sacrifice", Protect),
    ("compromise", Protect),
    ("degrade", Protect),
    ("degradation", Protect),
    ("regress", Protect),
    ("regression", Protect),
    ("affect", Protect),
    ("impact", Protect),
    ("break", Protect),
    ("exceed", Protect),
    ("push", Protect),
    ("suffer", Protect),
    ("drop", Protect),
    ("rise", Protect),
    ("go", Protect),
    ("slip", Protect),
    ("tank", Protect),
    ("dip", Protect),
    ("fall", Protect),
    ("same", Protect),
    ("intact", Protect),
    ("floor", Protect),
    // Guard openers.
    ("keep", Keep),
    ("keeping", Keep),
    ("maintain", Keep),
    ("preserve", Keep),
    ("retain", Keep),
    ("protect", Keep),
    ("stay", Keep),
    ("hold", Keep),
    ("respect", Keep),
    ("without", Keep),
    // Directions.
    ("down", Direction),
    ("low", Direction),
    ("minimal", Direction),
    ("up", Direction),
    ("high", Direction),
    ("higher", Direction),
    ("more", Direction),
    ("less", Direction),
    ("fewer", Direction),
    ("bad", Direction),
    ("terrible", Direction),
    ("awful", Direction),
    ("horrible", Direction),
    ("poor", Direction),
    ("huge", Direction),
    ("crazy", Direction),
    ("insane", Direction),
    ("ridiculous", Direction),
    ("explode", Direction),
    ("skyrocket", Direction),
    ("spike", Direction),
];

/// Words close in spelling to a vocabulary word that are words of their own.
const NOT_TYPOS: &[&str] = &[
    "resort", "scoring", "sealing", "scaring", "saying", "sayings", "summery", "cheater", "budged",
    "latent", "lover", "lowers", "faster", "report", "review", "revise", "reuse", "shows", "shown",
    "showed", "spent", "slower", "tower", "loser", "compete", "complete", "profit", "quantity",
    "qualify", "deduct", "reduct", "review", "overview", "detail", "detailed", "shower", "flower",
    "power", "slowly", "lowest", "showing", "cheats", "spends", "budgie", "latest", "cutter",
    "reducer", "rather", "faith", "quite", "quiet",
];

/// Words after a negator that undo it (`don't know`, `not just`).
const NOT_NEGATING: &[&str] = &["know", "sure", "idea", "just", "only", "mind", "understand"];

/// A cue found in the request: where, what, and the words it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Index of its first token.
    pub at: usize,
    /// Tokens it spans.
    pub len: usize,
    /// What it says.
    pub cue: Cue,
    /// The words as written (with the word read, for a misspelling).
    pub words: String,
    /// True when it was read from a misspelling.
    pub typo: bool,
}

/// Every cue of `tokens`, in order; a phrase's words are not looked up
/// again alone.
pub fn cues(tokens: &[Token]) -> Vec<Found> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(found) = phrase_at(tokens, i).or_else(|| word_at(tokens, i)) {
            i += found.len;
            out.push(found);
        } else {
            i += 1;
        }
    }
    out
}

fn phrase_at(tokens: &[Token], i: usize) -> Option<Found> {
    PHRASES.iter().find_map(|(words, cue)| {
        let span = tokens.get(i..i + words.len())?;
        span.iter()
            .zip(words.iter())
            .all(|(t, w)| t.lower == *w)
            .then(|| Found {
                at: i,
                len: words.len(),
                cue: *cue,
                words: span
                    .iter()
                    .map(|t| t.raw.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                typo: false,
            })
    })
}

fn word_at(tokens: &[Token], i: usize) -> Option<Found> {
    let t = &tokens[i];
    if !t.is_word() && t.number() != Some(429.0) {
        return None;
    }
    let found = |cue: Cue, words: String, typo: bool| Found {
        at: i,
        len: 1,
        cue,
        words,
        typo,
    };
    if let Some(cue) = lookup(&t.lower) {
        // "keeps hitting", "keep getting": goes on, guards nothing.
        let keeps = matches!(t.lower.as_str(), "keep" | "keeps" | "kept");
        if keeps && tokens.get(i + 1).is_some_and(|n| n.lower.ends_with("ing")) {
            return None;
        }
        if cue == Negator
            && tokens
                .get(i + 1)
                .is_some_and(|n| NOT_NEGATING.contains(&n.lower.as_str()))
        {
            return None;
        }
        return Some(found(cue, t.raw.clone(), false));
    }
    let (cue, read) = typo_of(&t.lower)?;
    Some(found(cue, format!("{} (read as {read})", t.raw), true))
}

/// The cue of a word, by its lemmas.
pub fn lookup(word: &str) -> Option<Cue> {
    lemmas(word)
        .iter()
        .find_map(|l| WORDS.iter().find(|(w, _)| w == l).map(|(_, c)| *c))
}

/// True when the word is one the vocabulary knows (by a lemma).
pub fn known(word: &str) -> bool {
    lookup(word).is_some() || PHRASES.iter().any(|(ws, _)| ws.contains(&word))
}

/// The vocabulary word a misspelled word stands for: same first letter,
/// one edit away (two for words of eight letters or more, a swap of two
/// letters counting as one), goal, change and look words only.
fn typo_of(word: &str) -> Option<(Cue, &'static str)> {
    let chars = word.chars().count();
    if chars < 5 || !word.chars().all(|c| c.is_ascii_alphabetic()) || NOT_TYPOS.contains(&word) {
        return None;
    }
    if super::language::english_word(word) {
        return None;
    }
    let first = word.chars().next()?;
    let candidates = lemmas(word);
    WORDS
        .iter()
        .filter(|(w, cue)| {
            w.len() >= 6
                && w.starts_with(first)
                && matches!(cue, Goal(_) | Better(_) | Change | Look)
        })
        .filter_map(|(w, cue)| {
            let limit = if w.len() >= 8 { 2 } else { 1 };
            let d = candidates
                .iter()
                .map(|c| strsim::damerau_levenshtein(c, w))
                .min()?;
            (d <= limit).then_some((d, *cue, *w))
        })
        .chain(swapped_short_word(word, first))
        .min_by_key(|(d, _, _)| *d)
        .map(|(_, cue, w)| (cue, w))
}

/// A five-letter vocabulary word with two letters of `word` swapped
/// (`usgae`, `spned`): a swap is a typing slip; one letter changed in a
/// short word is as often another word.
fn swapped_short_word(word: &str, first: char) -> Option<(usize, Cue, &'static str)> {
    WORDS
        .iter()
        .filter(|(w, cue)| {
            w.len() == word.len()
                && w.len() == 5
                && w.starts_with(first)
                && matches!(cue, Goal(_) | Better(_) | Change | Look)
        })
        .find(|(w, _)| {
            strsim::damerau_levenshtein(word, w) == 1 && strsim::levenshtein(word, w) == 2
        })
        .map(|(w, cue)| (1, *cue, *w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::triage::text::tokens;

    fn cue_list(text: &str) -> Vec<Cue> {
        cues(&tokens(text)).into_iter().map(|f| f.cue).collect()
    }

    #[test]
    fn words_are_whole_and_inflected() {
        assert_eq!(cue_list("executive summary"), vec![Look]);
        assert_eq!(cue_list("minimising the costs"), vec![Change, Goal(Cost)]);
        assert_eq!(cue_list("less expensive"), vec![Better(Cost)]);
        assert_eq!(cue_list("cutlery shower"), Vec::<Cue>::new());
    }

    #[test]
    fn misspellings_are_read_as_the_word_they_miss() {
        assert_eq!(cue_list("latancy"), vec![Goal(Latency)]);
        assert_eq!(cue_list("throughtput"), vec![Goal(Throughput)]);
        assert_eq!(cue_list("qualtiy"), vec![Goal(Quality)]);
        assert_eq!(cue_list("redcue"), vec![Change]);
        assert_eq!(cue_list("resort power"), Vec::<Cue>::new());
    }
}
