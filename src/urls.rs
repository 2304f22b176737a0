//! URL checks shared by the configuration (an S3 endpoint) and file requests (a
//! presigned URL).

/// An https URL with a host (http only when allowed, for loopback tests).
pub fn check_url(url: &str, allow_plain_http: bool) -> Result<(), String> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        if !allow_plain_http {
            return Err("plain-HTTP URLs are refused (upload.allow_plain_http is off)".into());
        }
        rest
    } else {
        return Err("the URL must start with https://".into());
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() || url.len() > 8192 || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err("the URL has no host, is over 8 KiB or holds spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn only_https_urls_with_a_host_pass_unless_plain_http_is_allowed() {
        assert!(check_url("https://s3.example.com/b/k?x=1", false).is_ok());
        assert!(check_url("http://127.0.0.1:9000", false).is_err());
        assert!(check_url("http://127.0.0.1:9000", true).is_ok());
        assert!(check_url("https:///no-host", false).is_err());
        assert!(check_url("ftp://h/k", true).is_err());
        assert!(check_url("https://h/a b", false).is_err());
    }
}
