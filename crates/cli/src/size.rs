//! Sizes and durations on the command line: `4MiB`, `3MB`, `150MB`, `24h`.

/// Parses a byte size: `MB` is 10^6 bytes, `MiB` 2^20, a bare number is bytes.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("`{s}` is not a size; write e.g. 4MiB, 3MB or 1048576"))
}

/// Parses a duration such as `24h`, `90m` or `1h 30m`.
#[cfg(feature = "server")]
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 24h, 90m or 30s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_mean_what_they_say() {
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("150MB"), Ok(150_000_000));
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("3.75MiB"), Ok(3_932_160));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
    }

    #[cfg(feature = "server")]
    #[test]
    fn durations_take_units() {
        assert_eq!(
            parse_duration("24h"),
            Ok(std::time::Duration::from_secs(86_400))
        );
        assert!(parse_duration("soon").is_err());
    }
}
