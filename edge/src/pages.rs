//! The pages and the browser client, compiled into the Worker and served by it. As static
//! assets they would put Cloudflare's asset router in front of every request: one more hop
//! for each API call and one more proxy held for each open socket (about 80 MiB per 1000
//! idle sockets in local workerd, BENCHMARKS.md, issue 15). Pure: the shell writes the answer.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::digest::sha256_hex;

/// One file the Worker serves.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// The URL path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every page, by path.
pub static PAGES: [Page; 8] = [
    page("/", HTML, include_bytes!("../public/index.html")),
    page("/analysis", HTML, include_bytes!("../public/analysis.html")),
    page("/pool", HTML, include_bytes!("../public/pool.html")),
    page(
        "/dashboard.js",
        JS,
        include_bytes!("../public/dashboard.js"),
    ),
    page("/pool.js", JS, include_bytes!("../public/pool.js")),
    page("/tenant.js", JS, include_bytes!("../public/tenant.js")),
    page("/style.css", CSS, include_bytes!("../public/style.css")),
    page(
        "/client/v1/stagecast.js",
        JS,
        include_bytes!("../../client/stagecast.js"),
    ),
];

const fn page(path: &'static str, content_type: &'static str, body: &'static [u8]) -> Page {
    Page {
        path,
        content_type,
        body,
    }
}

/// Each page's entity tag by path: hashed once per isolate.
static ETAGS: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    PAGES
        .iter()
        .map(|p| (p.path, format!("\"{}\"", &sha256_hex(p.body)[..16])))
        .collect()
});

/// Revalidate on every use (as Cloudflare serves static HTML): a deploy shows at once, and
/// an unchanged page costs a 304 with no body.
pub const CACHE_CONTROL: &str = "public, max-age=0, must-revalidate";

/// The page served at `path`.
pub fn find(path: &str) -> Option<&'static Page> {
    PAGES.iter().find(|p| p.path == path)
}

impl Page {
    /// Its entity tag, quoted as the `ETag` header carries it.
    pub fn etag(&self) -> &'static str {
        &ETAGS[self.path]
    }

    /// Whether a request with `If-None-Match: if_none_match` already holds this version
    /// (answer 304).
    pub fn not_modified(&self, if_none_match: Option<&str>) -> bool {
        let etag = self.etag();
        if_none_match.is_some_and(|header| {
            header
                .split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == "*" || t == etag)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_is_found_at_its_path_and_none_other() {
        for page in &PAGES {
            assert!(std::ptr::eq(find(page.path).unwrap(), page));
            assert!(!page.body.is_empty(), "{} is empty", page.path);
        }
        assert_eq!(find("/analysis.html"), None);
        assert_eq!(find("/v1/analyses/a1"), None);
        assert_eq!(find("/analysis/"), None);
    }

    #[test]
    fn every_file_of_the_public_folder_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("public");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = match name.strip_suffix(".html") {
                Some("index") => "/".to_owned(),
                Some(stem) => format!("/{stem}"),
                None => format!("/{name}"),
            };
            let page = find(&path).unwrap_or_else(|| panic!("edge/public/{name} is not in PAGES"));
            assert_eq!(page.body, std::fs::read(dir.join(&name)).unwrap());
        }
    }

    #[test]
    fn entity_tags_follow_the_content() {
        let dashboard = find("/analysis").unwrap();
        let tag = dashboard.etag();
        assert_eq!(tag.len(), 18);
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        let tags: std::collections::HashSet<_> = PAGES.iter().map(|p| p.etag()).collect();
        assert_eq!(tags.len(), PAGES.len(), "two pages share a tag");
        assert!(dashboard.not_modified(Some(tag)));
        assert!(dashboard.not_modified(Some(&format!("\"other\", W/{tag}"))));
        assert!(dashboard.not_modified(Some("*")));
        assert!(!dashboard.not_modified(Some("\"other\"")));
        assert!(!dashboard.not_modified(None));
    }
}
