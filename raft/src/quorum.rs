//! Majority arithmetic, kept apart from the state machine so it can be checked alone.

/// The largest index that a majority of `matched` (one value per voter) has reached.
pub(crate) fn committed_index(matched: &mut [u64]) -> u64 {
    assert!(
        !matched.is_empty(),
        "a configuration has at least one voter"
    );
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[majority(matched.len()) - 1]
}

/// How many of `n` voters make a majority.
pub(crate) fn majority(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_is_the_majority_floor() {
        assert_eq!(committed_index(&mut [5]), 5);
        assert_eq!(committed_index(&mut [5, 3, 1]), 3);
        assert_eq!(committed_index(&mut [5, 5, 1, 1]), 1, "4 voters need 3");
        assert_eq!(committed_index(&mut [9, 7, 7, 2, 1]), 7);
    }

    #[test]
    fn naive_agrees() {
        // Compare with the definition: the largest i that at least a majority has reached.
        let mut seed = 7u64;
        for _ in 0..2000 {
            let n = (seed % 7 + 1) as usize;
            let v: Vec<u64> = (0..n)
                .map(|k| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) % 10 + k as u64 % 2
                })
                .collect();
            let naive = (0..=20u64)
                .filter(|i| v.iter().filter(|m| *m >= i).count() >= majority(n))
                .max()
                .unwrap();
            assert_eq!(committed_index(&mut v.clone()), naive, "{v:?}");
        }
    }
}
