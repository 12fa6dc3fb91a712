//! What the batched statements (intake, phase starts, effects) share: how a
//! batch is split into rounds of distinct runs or keys, how a bind column is
//! built, and how the error of a failed statement reaches every item it
//! carried and every item still waiting (a [`super::Error`] is cloned for
//! each).

use std::{collections::HashSet, hash::Hash};

use super::Error;

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
/// and the later ones): an outage stays an outage, anything else stays not
/// one.
pub fn fail_rest<T, E: From<Error>>(
    results: &mut [Option<Result<T, E>>],
    waiting: impl IntoIterator<Item = usize>,
    e: Error,
) {
    for k in waiting {
        if let Some(slot) = results.get_mut(k) {
            *slot = Some(Err(E::from(e.clone())));
        }
    }
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
        let mut results: Vec<Option<Result<(), Error>>> = vec![Some(Ok(())), None, None];
        fail_rest(&mut results, [1, 2], Error::from(sqlx::Error::PoolTimedOut));
        assert!(matches!(results[0], Some(Ok(()))));
        for r in &results[1..] {
            match r {
                Some(Err(e)) => assert!(e.is_outage(), "{e}"),
                other => panic!("{other:?}"),
            }
        }
        let mut results: Vec<Option<Result<(), Error>>> = vec![None, None];
        fail_rest(&mut results, [0, 1], Error::internal("bad"));
        for r in &results {
            match r {
                Some(Err(e)) => assert!(!e.is_outage() && e.to_string().contains("bad"), "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
