//! Byte sizes as users write them on the command line.

use crate::CoreError;

/// Parses `64MiB`, `1MiB`, `256KiB`, `1GiB`, `4096` or `10MB` into bytes; zero is refused.
pub fn parse_byte_size(input: &str) -> Result<u64, CoreError> {
    let cfg = parse_size::Config::new().with_binary();
    let n = cfg
        .parse_size(input.trim())
        .map_err(|e| CoreError::InvalidSize {
            input: input.to_string(),
            reason: e.to_string(),
        })?;
    if n == 0 {
        return Err(CoreError::InvalidSize {
            input: input.to_string(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units() {
        assert_eq!(parse_byte_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_byte_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_byte_size("256KiB").unwrap(), 256 << 10);
        assert_eq!(parse_byte_size("4096").unwrap(), 4096);
        assert_eq!(parse_byte_size("1 GiB").unwrap(), 1 << 30);
    }

    #[test]
    fn refuses_garbage_and_zero() {
        for bad in ["", "abc", "12XB", "-5MiB", "0", "1.5.5MiB"] {
            let e = parse_byte_size(bad).unwrap_err().to_string();
            assert!(e.contains("invalid size"), "{bad}: {e}");
        }
    }
}
