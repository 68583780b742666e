//! What an endpoint URL says about where requests go: this machine, an IP, plain http.

/// The host of an endpoint URL: without scheme, port, path or IPv6 brackets.
pub(crate) fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    }
}

fn is_localhost(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// Whether an endpoint URL names localhost or an IP address (virtual-host addressing cannot work there).
pub fn is_local_or_ip(url: &str) -> bool {
    let host = host(url);
    is_localhost(host) || host.parse::<std::net::IpAddr>().is_ok()
}

/// Whether an endpoint URL names this machine (localhost, 127.0.0.0/8, ::1).
pub fn is_loopback(url: &str) -> bool {
    let host = host(url);
    is_localhost(host)
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The warning for an endpoint that sends data unencrypted to another machine, if it does.
pub fn plain_http_warning(url: &str) -> Option<String> {
    (url.starts_with("http://") && !is_loopback(url)).then(|| {
        format!(
            "{url} is plain http to another machine: requests are signed, but data and metadata cross the network unencrypted; use https"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_endpoints_use_path_style() {
        for (url, local) in [
            ("http://127.0.0.1:3900", true),
            ("http://localhost:9000/", true),
            ("http://[::1]:9000", true),
            ("https://10.0.0.5", true),
            ("https://s3.us-east-1.amazonaws.com", false),
            ("https://minio.example.com:9000", false),
        ] {
            assert_eq!(is_local_or_ip(url), local, "{url}");
        }
        assert!(is_loopback("http://127.0.0.1:3900") && is_loopback("http://[::1]:1"));
        assert!(!is_loopback("http://10.0.0.5:9000") && !is_loopback("http://minio.lan"));
        assert!(
            plain_http_warning("http://10.0.0.5:9000")
                .unwrap()
                .contains("unencrypted")
        );
        assert!(plain_http_warning("https://10.0.0.5:9000").is_none());
        assert!(plain_http_warning("http://127.0.0.1:3900").is_none());
    }

    #[test]
    fn host_is_the_bare_name() {
        for (url, h) in [
            (
                "https://s3.eu-west-1.amazonaws.com/",
                "s3.eu-west-1.amazonaws.com",
            ),
            ("http://127.0.0.1:3900/bucket", "127.0.0.1"),
            ("http://[::1]:9000", "::1"),
            ("minio.lan:9000", "minio.lan"),
        ] {
            assert_eq!(host(url), h, "{url}");
        }
    }
}
