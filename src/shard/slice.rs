//! Which worker this process is, and which parts it sends.
//!
//! The index comes from `--index`, else from the scheduler that started the process, in this
//! order: AWS Batch array jobs (`AWS_BATCH_JOB_ARRAY_INDEX`, count `AWS_BATCH_JOB_ARRAY_SIZE`),
//! Kubernetes Indexed Jobs (`JOB_COMPLETION_INDEX`; Kubernetes does not expose the count, so the
//! plan's is used), Slurm arrays (`SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN`, divided by
//! `SLURM_ARRAY_TASK_STEP`; count `SLURM_ARRAY_TASK_COUNT`). A count that disagrees with the plan
//! is refused: the array and the plan would cover different parts.

use std::ops::RangeInclusive;

use super::ShardError;

/// This worker's place in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Assigned {
    /// The slice, 0-based.
    pub index: u32,
    /// Where the index came from (`--index`, or the variable).
    pub from: &'static str,
}

/// The slice this process sends, for a plan of `shards` slices: `index` (`--index`) if given,
/// else the scheduler's variables as read by `var`.
pub(crate) fn assigned(
    index: Option<u32>,
    shards: u32,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Assigned, ShardError> {
    let last = shards.saturating_sub(1);
    let num = |name: &'static str| -> Result<Option<u64>, ShardError> {
        match var(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ShardError::BadVariable {
                    var: name,
                    value: v,
                }),
        }
    };
    let count_agrees = |from: &'static str, count: Option<u64>| match count {
        Some(c) if c != u64::from(shards) => Err(ShardError::CountMismatch {
            from,
            count: c,
            shards,
        }),
        _ => Ok(()),
    };
    let (index, from) = if let Some(i) = index {
        (u64::from(i), "--index")
    } else if let Some(i) = num("AWS_BATCH_JOB_ARRAY_INDEX")? {
        count_agrees("AWS_BATCH_JOB_ARRAY_SIZE", num("AWS_BATCH_JOB_ARRAY_SIZE")?)?;
        (i, "AWS_BATCH_JOB_ARRAY_INDEX")
    } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
        (i, "JOB_COMPLETION_INDEX")
    } else if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        count_agrees("SLURM_ARRAY_TASK_COUNT", num("SLURM_ARRAY_TASK_COUNT")?)?;
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        let from = "SLURM_ARRAY_TASK_ID";
        let offset = id.checked_sub(min).filter(|o| o % step == 0);
        let Some(offset) = offset else {
            // An id list such as --array=1,5,9 has no dense index.
            return Err(ShardError::IndexOutOfRange {
                index: id,
                from,
                last,
            });
        };
        (offset / step, from)
    } else {
        return Err(ShardError::NoIndex { last });
    };
    if index > u64::from(last) {
        return Err(ShardError::IndexOutOfRange { index, from, last });
    }
    Ok(Assigned {
        index: index as u32,
        from,
    })
}

/// The part numbers of slice `index` when `parts` parts are cut into `shards` contiguous slices
/// whose sizes differ by at most one part. Needs `1 <= shards <= parts` and `index < shards`.
pub(crate) fn parts_of(index: u32, shards: u32, parts: u32) -> RangeInclusive<u32> {
    debug_assert!(shards >= 1 && shards <= parts && index < shards);
    let cut = |i: u32| (u64::from(i) * u64::from(parts) / u64::from(shards)) as u32;
    cut(index) + 1..=cut(index + 1)
}

/// The slice that sends part `number` (inverse of [`parts_of`]).
pub(crate) fn slice_of(number: u32, shards: u32, parts: u32) -> u32 {
    (0..shards)
        .find(|&i| parts_of(i, shards, parts).contains(&number))
        .unwrap_or(shards.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn each_scheduler_names_the_slice() {
        type Case<'a> = (&'a [(&'a str, &'a str)], u32, &'a str);
        let cases: [Case; 6] = [
            (
                &[
                    ("AWS_BATCH_JOB_ARRAY_INDEX", "2"),
                    ("AWS_BATCH_JOB_ARRAY_SIZE", "4"),
                ],
                2,
                "AWS_BATCH_JOB_ARRAY_INDEX",
            ),
            (&[("JOB_COMPLETION_INDEX", "3")], 3, "JOB_COMPLETION_INDEX"),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "11"),
                    ("SLURM_ARRAY_TASK_MIN", "10"),
                    ("SLURM_ARRAY_TASK_COUNT", "4"),
                ],
                1,
                "SLURM_ARRAY_TASK_ID",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "6"),
                    ("SLURM_ARRAY_TASK_MIN", "0"),
                    ("SLURM_ARRAY_TASK_STEP", "2"),
                    ("SLURM_ARRAY_TASK_COUNT", "4"),
                ],
                3,
                "SLURM_ARRAY_TASK_ID",
            ),
            (&[("SLURM_ARRAY_TASK_ID", "0")], 0, "SLURM_ARRAY_TASK_ID"),
            // AWS Batch wins over a Slurm variable inherited from a login shell.
            (
                &[
                    ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
                    ("SLURM_ARRAY_TASK_ID", "3"),
                ],
                1,
                "AWS_BATCH_JOB_ARRAY_INDEX",
            ),
        ];
        for (vars, want, from) in cases {
            let a = assigned(None, 4, env(vars)).unwrap();
            assert_eq!((a.index, a.from), (want, from), "{vars:?}");
        }
        let flag = assigned(Some(0), 4, env(&[("JOB_COMPLETION_INDEX", "3")])).unwrap();
        assert_eq!((flag.index, flag.from), (0, "--index"));
    }

    #[test]
    fn a_count_or_index_the_plan_does_not_have_is_refused() {
        let e = assigned(
            None,
            4,
            env(&[
                ("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "5"),
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ShardError::CountMismatch {
                    count: 5,
                    shards: 4,
                    ..
                }
            ),
            "{e}"
        );
        let e = assigned(
            None,
            4,
            env(&[
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(e, ShardError::CountMismatch { count: 3, .. }),
            "{e}"
        );
        for vars in [
            &[("JOB_COMPLETION_INDEX", "4")][..],
            &[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "1")][..],
            // --array=1,5,9: no dense index.
            &[
                ("SLURM_ARRAY_TASK_ID", "5"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_STEP", "3"),
            ][..],
        ] {
            let e = assigned(None, 4, env(vars)).unwrap_err();
            assert!(
                matches!(e, ShardError::IndexOutOfRange { .. }),
                "{vars:?}: {e}"
            );
        }
        assert!(matches!(
            assigned(Some(4), 4, env(&[])).unwrap_err(),
            ShardError::IndexOutOfRange { index: 4, .. }
        ));
        assert!(matches!(
            assigned(None, 4, env(&[])).unwrap_err(),
            ShardError::NoIndex { last: 3 }
        ));
        let e = assigned(None, 4, env(&[("JOB_COMPLETION_INDEX", "two")])).unwrap_err();
        assert!(e.to_string().contains("JOB_COMPLETION_INDEX=two"), "{e}");
    }

    #[test]
    fn slices_of_a_small_plan() {
        let all: Vec<_> = (0..4).map(|i| parts_of(i, 4, 13)).collect();
        assert_eq!(all, vec![1..=3, 4..=6, 7..=9, 10..=13]);
        assert_eq!(parts_of(0, 1, 7), 1..=7);
    }

    proptest! {
        /// Every part is in exactly one slice, slices are contiguous and in order, none is empty,
        /// their sizes differ by at most one, and slice_of finds the slice of each part.
        #[test]
        fn slices_cover_every_part_once(parts in 1u32..=10_000, shards_seed in 0u32..10_000) {
            let shards = 1 + shards_seed % parts;
            let mut next = 1;
            let (mut small, mut big) = (u32::MAX, 0);
            for i in 0..shards {
                let r = parts_of(i, shards, parts);
                prop_assert_eq!(*r.start(), next);
                prop_assert!(r.end() >= r.start());
                let len = r.end() - r.start() + 1;
                small = small.min(len);
                big = big.max(len);
                next = r.end() + 1;
            }
            prop_assert_eq!(next, parts + 1);
            prop_assert!(big - small <= 1);
            for n in [1, parts / 2 + 1, parts] {
                prop_assert!(parts_of(slice_of(n, shards, parts), shards, parts).contains(&n));
            }
        }
    }
}
