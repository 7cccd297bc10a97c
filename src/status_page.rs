//! The status page at `GET /`: a read-only HTML document, its script and its stylesheet, compiled
//! into the binary (no external assets, no framework; works with no network but the daemon's).
//!
//! The script (`status_page/status.js`) polls `/health` every few seconds (`?refresh=N`, 1–300 s)
//! and renders the overall status, the mode and its reason, every actor, the broker link, the
//! strategies, the open alerts by severity, the last recovery and the uptime — building the DOM
//! from text nodes only, so nothing the daemon reports (an alert message, an error) can become
//! markup. The page offers no action: no form, no button, no request but GETs of `/health`.
//! This module owns the three documents and the headers that keep the page to itself (a strict
//! Content-Security-Policy); it knows nothing of the actors.

/// The HTML document served at `/`.
pub const INDEX_HTML: &str = include_str!("status_page/index.html");
/// The page's script, served at `/status.js`.
pub const SCRIPT_JS: &str = include_str!("status_page/status.js");
/// The page's stylesheet, served at `/status.css`.
pub const STYLE_CSS: &str = include_str!("status_page/status.css");

/// The paths this module serves.
pub const PATHS: [&str; 3] = ["/", "/status.js", "/status.css"];

/// Same-origin script, style and fetches only; no inline code, no plugins, no frames, no forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One served document: its content type and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The document at `path`, if it is one of [`PATHS`].
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/" => ("text/html; charset=utf-8", INDEX_HTML),
        "/status.js" => ("text/javascript; charset=utf-8", SCRIPT_JS),
        "/status.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_served_with_its_type() {
        for p in PATHS {
            let a = asset(p).unwrap();
            assert!(a.content_type.ends_with("; charset=utf-8"), "{p}");
            assert!(!a.body.is_empty(), "{p}");
        }
        assert_eq!(asset("/").unwrap().content_type, "text/html; charset=utf-8");
        assert_eq!(asset("/index.html"), None);
        assert_eq!(asset("/status"), None);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_has_no_inline_code() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("status.js", SCRIPT_JS),
            ("status.css", STYLE_CSS),
        ] {
            for external in [
                "http:",
                "https:",
                "src=\"//",
                "href=\"//",
                "url(",
                "@import",
            ] {
                assert!(!text.contains(external), "{name} contains {external}");
            }
        }
        // The CSP allows only same-origin script and style: inline code would not run.
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains("style=\""));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(INDEX_HTML.contains("<script src=\"/status.js\" defer></script>"));
        // No inline event handler (` onload=`, ` onerror=`, …).
        for (i, _) in INDEX_HTML.match_indices(" on") {
            let rest = &INDEX_HTML[i + 3..];
            let word: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            assert!(
                !rest[word.len()..].starts_with('='),
                "inline event handler on{word}= in index.html"
            );
        }
    }

    #[test]
    fn the_page_offers_no_action_and_writes_no_markup() {
        let html = INDEX_HTML.to_ascii_lowercase();
        for tag in ["<form", "<button", "<input", "<select", "<textarea", "<a "] {
            assert!(!html.contains(tag), "index.html has {tag}");
        }
        for created in ["\"form\"", "\"button\"", "\"input\"", "\"select\"", "\"a\""] {
            assert!(
                !SCRIPT_JS.contains(created),
                "status.js creates {created} elements"
            );
        }
        // Text nodes only: none of the APIs that parse a string as HTML or code.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "Function(",
            "setAttribute",
        ] {
            assert!(!SCRIPT_JS.contains(sink), "status.js uses {sink}");
        }
        // It only reads: one fetch, of /health, with no method (GET).
        assert_eq!(SCRIPT_JS.matches("fetch(").count(), 1);
        assert!(SCRIPT_JS.contains("fetch(\"/health\""));
        assert!(!SCRIPT_JS.contains("method"));
    }

    #[test]
    fn the_policy_is_same_origin_only() {
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(CONTENT_SECURITY_POLICY.contains(part), "{part}");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(!CONTENT_SECURITY_POLICY.contains("http"));
        assert!(!CONTENT_SECURITY_POLICY.contains('*'));
    }
}
