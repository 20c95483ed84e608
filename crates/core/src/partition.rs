//! Hive-style partition directories: `…/day=2026-12-01/region=eu/part-0.parquet`. Every
//! `key=value` directory in a file's path is a column of the records read from it (a value
//! that is an integer is an integer, `__HIVE_DEFAULT_PARTITION__` is null), unless the records
//! have a column of that name themselves. Here so that the readers (storage) and the record
//! decoders (udf) agree on them.

/// The value Hive writes for a null partition value.
const NULL_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";

/// One partition column of a file: its name and value.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionValue {
    /// Column name (the directory's key).
    pub key: String,
    /// The value, percent-decoded; `None` for Hive's null.
    pub value: Option<String>,
}

impl PartitionValue {
    /// An integer value, when it is one.
    pub fn as_int(&self) -> Option<i64> {
        self.value.as_deref().and_then(|v| v.parse().ok())
    }
}

/// Decodes `%XX` escapes (Hive escapes `/`, `=`, `%` and others in values).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `key=value` directories of `path` (a file path or URI), outermost first; a key given
/// twice keeps its innermost value.
pub fn partition_values(path: &str) -> Vec<PartitionValue> {
    let dirs = match path.rsplit_once('/') {
        Some((d, _)) => d,
        None => return Vec::new(),
    };
    let mut out: Vec<PartitionValue> = Vec::new();
    for part in dirs.split('/') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        if k.is_empty() || k.starts_with('.') || k.starts_with('_') {
            continue;
        }
        let value = (v != NULL_VALUE).then(|| unescape(v));
        let key = unescape(k);
        out.retain(|p| p.key != key);
        out.push(PartitionValue { key, value });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_directories_become_values() {
        let p = partition_values("s3://b/t/day=2026-12-01/hour=07/n=%2Fx/_tmp=1/part-0.parquet");
        let got: Vec<(String, Option<String>)> =
            p.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
        assert_eq!(
            got,
            [
                ("day".to_string(), Some("2026-12-01".to_string())),
                ("hour".to_string(), Some("07".to_string())),
                ("n".to_string(), Some("/x".to_string())),
            ]
        );
        assert_eq!(p[1].as_int(), Some(7));
        assert!(partition_values("a=1.parquet").is_empty());
        let null = partition_values("/t/k=__HIVE_DEFAULT_PARTITION__/f");
        assert_eq!(null[0].value, None);
    }
}
