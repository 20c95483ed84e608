//! Range partitioning (Hadoop's TotalOrderPartitioner, Spark's RangePartitioner): reduce
//! partition `p` gets the keys between boundaries `p - 1` and `p`, so the part files read in
//! partition order are globally sorted. The coordinator samples the input's keys at planning
//! and, once it knows the number of reducers, hands the boundaries to every map task as a job
//! parameter.

use crate::CoreError;

/// Job parameter: range-partition by the first N bytes of each input line (set by a job that
/// sorts, like the built-in `sort`); the coordinator then samples the input for boundaries.
pub const RANGE_KEY_BYTES_PARAM: &str = "sluice.range.key_bytes";

/// Key bytes when a job does not say (TeraSort's keys).
pub const DEFAULT_KEY_BYTES: usize = 10;

/// The key length [`RANGE_KEY_BYTES_PARAM`] gives (`None`: the default).
pub fn key_bytes(param: Option<&str>) -> Result<usize, CoreError> {
    match param {
        None => Ok(DEFAULT_KEY_BYTES),
        Some(v) => v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            CoreError::InvalidParam(format!(
                "--param {RANGE_KEY_BYTES_PARAM}={v}: expected a number of bytes above 0"
            ))
        }),
    }
}

/// Job parameter set by the coordinator: the `reducers - 1` boundaries, hex, comma-separated.
pub const RANGE_BOUNDS_PARAM: &str = "sluice.range.bounds";

/// The boundaries that cut the sorted `sample` into `partitions` parts of equal size.
pub fn quantiles(sorted_sample: &[Vec<u8>], partitions: u32) -> Vec<Vec<u8>> {
    let n = sorted_sample.len();
    if n == 0 || partitions < 2 {
        return Vec::new();
    }
    (1..partitions as usize)
        .map(|i| sorted_sample[(i * n / partitions as usize).min(n - 1)].clone())
        .collect()
}

/// The partition of `key`: how many boundaries are at or below it.
pub fn partition_of(bounds: &[impl AsRef<[u8]>], key: &[u8]) -> u32 {
    bounds.partition_point(|b| b.as_ref() <= key) as u32
}

/// Boundaries as the parameter's value.
pub fn encode_bounds(bounds: &[Vec<u8>]) -> String {
    bounds
        .iter()
        .map(|b| crate::digest::to_hex(b))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`RANGE_BOUNDS_PARAM`]; boundaries must be in order.
pub fn decode_bounds(s: &str) -> Result<Vec<Vec<u8>>, CoreError> {
    let bad = |why: String| CoreError::InvalidParam(format!("{RANGE_BOUNDS_PARAM}: {why}"));
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (i, h) in s.split(',').enumerate() {
        if h.len() % 2 != 0 || !h.is_ascii() {
            return Err(bad(format!("boundary {i} is not hex: {h:?}")));
        }
        let b = (0..h.len())
            .step_by(2)
            .map(|j| u8::from_str_radix(&h[j..j + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| bad(format!("boundary {i} is not hex: {h:?}: {e}")))?;
        if out.last().is_some_and(|prev| *prev > b) {
            return Err(bad(format!("boundary {i} is below the one before it")));
        }
        out.push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_cut_a_sample_evenly_and_place_every_key() {
        let sample: Vec<Vec<u8>> = (0u8..100).map(|i| vec![i]).collect();
        let b = quantiles(&sample, 4);
        assert_eq!(b, [vec![25], vec![50], vec![75]]);
        assert_eq!(partition_of(&b, &[0]), 0);
        assert_eq!(partition_of(&b, &[24, 9]), 0);
        assert_eq!(partition_of(&b, &[25]), 1);
        assert_eq!(partition_of(&b, &[99]), 3);
        assert!(quantiles(&sample, 1).is_empty());
        assert!(quantiles(&[], 8).is_empty());
        // A skewed sample gives equal boundaries: the partitions between them stay empty.
        let skew = vec![vec![7u8]; 10];
        let b = quantiles(&skew, 3);
        assert_eq!(partition_of(&b, &[7]), 2);
        assert_eq!(partition_of(&b, &[6]), 0);
    }

    #[test]
    fn boundaries_round_trip_and_bad_ones_are_named() {
        let b = vec![b"!!".to_vec(), b"Az~".to_vec(), vec![0xff, 0]];
        assert_eq!(decode_bounds(&encode_bounds(&b)).unwrap(), b);
        assert!(decode_bounds("").unwrap().is_empty());
        let e = decode_bounds("41,4x").unwrap_err().to_string();
        assert!(
            e.contains("boundary 1") && e.contains(RANGE_BOUNDS_PARAM),
            "{e}"
        );
        let e = decode_bounds("42,41").unwrap_err().to_string();
        assert!(e.contains("below"), "{e}");
    }
}
