//! What the batched statements (intake, phase starts, effects) share: how a
//! batch is split into rounds of distinct runs or keys, how a bind column is
//! built, and how the error of a failed statement reaches every item it
//! carried and every item still waiting.

use std::{collections::HashSet, hash::Hash};

use super::is_outage;

/// Splits the waiting items into this round (at most one per key; items
/// without a key always go) and the later ones.
pub fn split_round<K: Eq + Hash>(
    pending: Vec<usize>,
    key: impl Fn(usize) -> Option<K>,
) -> (Vec<usize>, Vec<usize>) {
    let mut seen = HashSet::new();
    pending
        .into_iter()
        .partition(|&k| key(k).is_none_or(|key| seen.insert(key)))
}

/// One bind array: `f` of every item of the round, in order.
pub fn column<T>(round: &[usize], f: impl Fn(usize) -> T) -> Vec<T> {
    round.iter().map(|&k| f(k)).collect()
}

/// Gives the error of a failed statement to each of `waiting` (its round
/// and the later ones): the last gets the error itself, the others a
/// [`shared_error`] copy.
pub fn fail_rest<T, E: From<sqlx::Error>>(
    results: &mut [Option<Result<T, E>>],
    waiting: impl IntoIterator<Item = usize>,
    e: sqlx::Error,
) {
    let waiting: Vec<usize> = waiting.into_iter().collect();
    let Some((&last, rest)) = waiting.split_last() else {
        return;
    };
    for &k in rest {
        if let Some(slot) = results.get_mut(k) {
            *slot = Some(Err(E::from(shared_error(&e))));
        }
    }
    if let Some(slot) = results.get_mut(last) {
        *slot = Some(Err(E::from(e)));
    }
}

/// The error of a failed batch statement, for each item it carried (sqlx
/// errors cannot be cloned): an outage stays an outage, anything else stays
/// not one.
pub fn shared_error(e: &sqlx::Error) -> sqlx::Error {
    if is_outage(e) {
        sqlx::Error::Io(std::io::Error::other(e.to_string()))
    } else {
        internal_error(e.to_string())
    }
}

/// An error of netra's own store logic (not an outage: retrying as soon as
/// the database answers would not help).
pub fn internal_error(msg: impl Into<String>) -> sqlx::Error {
    sqlx::Error::Configuration(msg.into().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_take_one_item_per_key_and_every_item_without_one() {
        let keys = [Some("a"), Some("b"), Some("a"), None, None, Some("a")];
        let (round, later) = split_round((0..6).collect(), |k| keys[k]);
        assert_eq!(round, vec![0, 1, 3, 4]);
        assert_eq!(later, vec![2, 5]);
        let (round, later) = split_round(later, |k| keys[k]);
        assert_eq!((round, later), (vec![2], vec![5]));
    }

    #[test]
    fn a_failed_statement_fails_every_waiting_item_and_keeps_outages_outages() {
        let mut results: Vec<Option<Result<(), sqlx::Error>>> = vec![Some(Ok(())), None, None];
        fail_rest(&mut results, [1, 2], sqlx::Error::PoolTimedOut);
        assert!(matches!(results[0], Some(Ok(()))));
        for r in &results[1..] {
            match r {
                Some(Err(e)) => assert!(is_outage(e), "{e}"),
                other => panic!("{other:?}"),
            }
        }
        let mut results: Vec<Option<Result<(), sqlx::Error>>> = vec![None, None];
        fail_rest(&mut results, [0, 1], internal_error("bad"));
        for r in &results {
            match r {
                Some(Err(e)) => assert!(!is_outage(e) && e.to_string().contains("bad"), "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
