//! What an upload's bytes are, whatever it claims: the type its first bytes show, and whether that
//! agrees with the declared `Content-Type`.
//!
//! Browsers send the type a file's extension suggests and an attacker sends whatever passes the
//! policy, so the declared type says nothing about the bytes. Detection reads only the first
//! [`PREFIX`] bytes of a body as they stream past ([`Sniffer`]); the file is never buffered.
//! Signatures come from the `infer` crate, after a small sniff of our own for the text formats
//! that matter most in a browser and that `infer` misses or reads too loosely: SVG, and HTML
//! behind a byte-order mark or an XML prolog.
//!
//! The rule ([`check`]), applied only where verification is asked for (a link, a policy, a
//! bucket): a declared type whose format has a signature must be what the bytes show (aliases
//! and containers allowed: `image/jpg` is `image/jpeg`, a `.docx` is a zip), and bytes detected
//! as some type must not be declared as another (HTML named `photo.png`, an executable named
//! `report.pdf`). A generic declared type (`application/octet-stream`) claims nothing and passes.

/// The POST form field (and policy condition) that asks for the file's bytes to be checked
/// against its declared Content-Type: `on`. Not exempt from the policy: a form sends it only if
/// its policy covers it, and a policy that pins it to `on` cannot be posted without it.
pub const VERIFY_TYPE_FIELD: &str = "x-postgate-verify-type";

/// How many of a body's first bytes are kept for detection: enough for every signature `infer`
/// reads at the start of a file (tar's is at 257, an Office document's part names within the
/// first zip entries), small enough to cost nothing per upload.
pub const PREFIX: usize = 8 * 1024;

/// The type the bytes show, as a media type (`image/png`), or `None` when nothing is recognised.
pub fn detect(bytes: &[u8]) -> Option<&'static str> {
    markup(bytes).or_else(|| infer::get(bytes).map(|t| t.mime_type()))
}

/// SVG and HTML from their first tag: after a byte-order mark and whitespace, an XML prolog,
/// comments and a doctype are skipped; `<svg` (or an SVG doctype) is SVG; `<html`, `<script`,
/// an HTML doctype (and the other tags browsers sniff as HTML) are HTML.
fn markup(bytes: &[u8]) -> Option<&'static str> {
    let mut rest = skip_space(strip_bom(bytes));
    loop {
        if let Some(after) = strip_prefix_ci(rest, b"<?xml") {
            rest = skip_space(after_marker(after, b"?>")?);
        } else if let Some(after) = strip_prefix_ci(rest, b"<!--") {
            rest = skip_space(after_marker(after, b"-->")?);
        } else if let Some(after) = strip_prefix_ci(rest, b"<!doctype") {
            let name = skip_space(after);
            if tag_is(name, b"svg") {
                return Some(SVG);
            }
            if tag_is(name, b"html") {
                return Some(HTML);
            }
            rest = skip_space(after_marker(after, b">")?);
        } else {
            break;
        }
    }
    let tag = rest.strip_prefix(b"<")?;
    if tag_is(tag, b"svg") {
        return Some(SVG);
    }
    const HTML_TAGS: &[&[u8]] = &[
        b"html", b"head", b"body", b"script", b"iframe", b"style", b"title", b"div", b"table",
        b"a", b"p", b"h1", b"b", b"br", b"font", b"img", b"object", b"embed", b"form", b"meta",
        b"link", b"base",
    ];
    HTML_TAGS.iter().any(|t| tag_is(tag, t)).then_some(HTML)
}

const SVG: &str = "image/svg+xml";
const HTML: &str = "text/html";

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

fn skip_space(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn strip_prefix_ci<'a>(b: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (b.len() >= prefix.len() && b[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &b[prefix.len()..])
}

/// The bytes after the first `marker`.
fn after_marker<'a>(b: &'a [u8], marker: &[u8]) -> Option<&'a [u8]> {
    b.windows(marker.len())
        .position(|w| w == marker)
        .map(|i| &b[i + marker.len()..])
}

/// Whether `b` starts with the tag name `name` followed by the end of a name (or of the bytes).
fn tag_is(b: &[u8], name: &[u8]) -> bool {
    strip_prefix_ci(b, name).is_some_and(|after| {
        after
            .first()
            .is_none_or(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'))
    })
}

/// Keeps the first [`PREFIX`] bytes of a body as its chunks pass, and checks them once: as soon
/// as the prefix is full (or the body ends, if shorter). With verification on, a mismatch is
/// reported by the call that completes the prefix, before the rest of the body is read.
#[derive(Debug, Default)]
pub struct Sniffer {
    head: Vec<u8>,
    /// The declared type to verify the bytes against, when verification is on.
    verify: Option<String>,
    /// Set once the prefix was checked: what it showed.
    detected: Option<Option<&'static str>>,
}

impl Sniffer {
    /// Detection only: the type is recorded, nothing is refused.
    pub fn detect_only() -> Sniffer {
        Sniffer::default()
    }

    /// Detection and verification against `declared` (the upload's Content-Type, if any) when
    /// `verify` is on.
    pub fn new(declared: Option<&str>, verify: bool) -> Sniffer {
        Sniffer {
            verify: verify.then(|| declared.unwrap_or_default().to_owned()),
            ..Sniffer::default()
        }
    }

    /// Takes the next chunk of the body. Copies at most what the prefix still lacks.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Mismatch> {
        if self.detected.is_some() {
            return Ok(());
        }
        let take = (PREFIX - self.head.len()).min(chunk.len());
        self.head.extend_from_slice(&chunk[..take]);
        if self.head.len() >= PREFIX {
            self.decide()?;
        }
        Ok(())
    }

    /// The body ended: the type its first bytes show.
    pub fn finish(mut self) -> Result<Option<&'static str>, Mismatch> {
        self.decide()
    }

    fn decide(&mut self) -> Result<Option<&'static str>, Mismatch> {
        if let Some(found) = self.detected {
            return Ok(found);
        }
        let found = detect(&self.head);
        self.detected = Some(found);
        self.head = Vec::new();
        if let Some(declared) = &self.verify {
            check(declared, found)?;
        }
        Ok(found)
    }
}

/// The bytes are not what the upload declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Mismatch {
    pub declared: String,
    pub detected: Option<String>,
}

impl Mismatch {
    pub fn message(&self) -> String {
        match &self.detected {
            Some(found) => format!(
                "The file's content is {found}, not {} as declared. Nothing was stored.",
                self.declared
            ),
            None => format!(
                "The file's content does not look like {} as declared. Nothing was stored.",
                self.declared
            ),
        }
    }
}

/// Whether bytes detected as `detected` may be stored as `declared` (a `Content-Type` value).
pub fn check(declared: &str, detected: Option<&str>) -> Result<(), Mismatch> {
    let media = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let claimed = canonical(&media);
    let refuse = || {
        Err(Mismatch {
            declared: if media.is_empty() {
                "(none)".to_owned()
            } else {
                media.clone()
            },
            detected: detected.map(str::to_owned),
        })
    };
    if GENERIC.contains(&claimed) {
        return Ok(());
    }
    match detected.map(canonical) {
        Some(found) if compatible(claimed, found) => Ok(()),
        Some(_) => refuse(),
        None if has_signature(claimed) => refuse(),
        None => Ok(()),
    }
}

/// Declared types that claim nothing about the bytes.
const GENERIC: &[&str] = &["", "application/octet-stream", "binary/octet-stream"];

/// Other names for the types `infer` (and [`markup`]) report, as browsers and tools send them.
const ALIASES: &[(&str, &str)] = &[
    ("image/jpg", "image/jpeg"),
    ("image/pjpeg", "image/jpeg"),
    ("image/x-png", "image/png"),
    ("image/x-icon", "image/vnd.microsoft.icon"),
    ("image/ico", "image/vnd.microsoft.icon"),
    ("image/x-ms-bmp", "image/bmp"),
    ("image/x-bmp", "image/bmp"),
    ("image/x-tiff", "image/tiff"),
    ("image/heic", "image/heif"),
    ("application/x-pdf", "application/pdf"),
    ("application/acrobat", "application/pdf"),
    ("application/x-zip-compressed", "application/zip"),
    ("application/x-zip", "application/zip"),
    ("application/x-gzip", "application/gzip"),
    ("application/x-rar-compressed", "application/vnd.rar"),
    ("application/x-rar", "application/vnd.rar"),
    ("application/x-bzip", "application/x-bzip2"),
    ("application/x-msdownload", EXE),
    ("application/x-dosexec", EXE),
    ("application/x-ms-dos-executable", EXE),
    ("application/exe", EXE),
    ("application/x-elf", "application/x-executable"),
    ("application/x-sharedlib", "application/x-executable"),
    ("application/xml", "text/xml"),
    ("application/x-sh", "text/x-shellscript"),
    ("application/x-shellscript", "text/x-shellscript"),
    ("audio/mp3", "audio/mpeg"),
    ("audio/mpeg3", "audio/mpeg"),
    ("audio/x-mpeg", "audio/mpeg"),
    ("audio/x-mp3", "audio/mpeg"),
    ("audio/wav", "audio/x-wav"),
    ("audio/wave", "audio/x-wav"),
    ("audio/vnd.wave", "audio/x-wav"),
    ("audio/flac", "audio/x-flac"),
    ("audio/x-m4a", "audio/m4a"),
    ("audio/mp4", "audio/m4a"),
    ("audio/x-aac", "audio/aac"),
    ("audio/x-midi", "audio/midi"),
    ("audio/aiff", "audio/x-aiff"),
    ("video/avi", "video/x-msvideo"),
    ("video/msvideo", "video/x-msvideo"),
    ("video/mkv", "video/x-matroska"),
    ("font/woff", "application/font-woff"),
    ("font/woff2", "application/font-woff"),
    ("font/ttf", "application/font-sfnt"),
    ("font/otf", "application/font-sfnt"),
    ("font/sfnt", "application/font-sfnt"),
];

const EXE: &str = "application/vnd.microsoft.portable-executable";

fn canonical(media: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == media)
        .map_or(media, |(_, to)| to)
}

/// Formats whose files are one container, which a prefix may show only as the container (or as
/// a neighbour of the family): each group's members are taken for one another.
const FAMILIES: &[&[&str]] = &[
    // Zip: Office Open XML, OpenDocument, EPUB, Java and Android archives.
    &[
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/epub+zip",
        "application/java-archive",
        "application/vnd.android.package-archive",
        "image/openraster",
    ],
    // OLE compound files: legacy Office documents, MSI.
    &[
        "application/x-ole-storage",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.ms-outlook",
        "application/x-msi",
    ],
    // ISO base media files.
    &[
        "video/mp4",
        "video/quicktime",
        "video/x-m4v",
        "audio/m4a",
        "video/3gpp",
        "video/3gpp2",
    ],
    // Ogg.
    &["audio/ogg", "audio/opus", "video/ogg", "application/ogg"],
    // Matroska.
    &["video/x-matroska", "video/webm", "audio/webm"],
    // MPEG audio and video share frame sync bytes.
    &["audio/mpeg", "video/mpeg"],
];

fn compatible(claimed: &str, found: &str) -> bool {
    if claimed == found {
        return true;
    }
    if FAMILIES
        .iter()
        .any(|f| f.contains(&claimed) && f.contains(&found))
    {
        return true;
    }
    match found {
        // XML of any vocabulary (an `+xml` type, or XHTML, which may begin as HTML does).
        "text/xml" => claimed.ends_with("+xml"),
        "text/html" => claimed == "application/xhtml+xml",
        "application/zip" => claimed.ends_with("+zip"),
        _ => false,
    }
}

/// Whether files of this (canonical) type always show a signature in their first bytes. Text
/// formats whose start varies (an HTML fragment, XML, a script) do not count, except SVG, whose
/// root element [`markup`] finds.
fn has_signature(claimed: &str) -> bool {
    if matches!(claimed, "text/html" | "text/xml" | "text/x-shellscript") {
        return false;
    }
    claimed == SVG
        || infer::is_mime_supported(claimed)
        || FAMILIES.iter().any(|f| f.contains(&claimed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    #[test]
    fn markup_is_found_behind_boms_prologs_and_comments() {
        assert_eq!(detect(b"<!DOCTYPE html><p>x"), Some(HTML));
        assert_eq!(detect(b"\xEF\xBB\xBF  <html lang=en>"), Some(HTML));
        assert_eq!(detect(b"\n<script>alert(1)</script>"), Some(HTML));
        assert_eq!(
            detect(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            Some(SVG)
        );
        assert_eq!(
            detect(b"<?xml version=\"1.0\"?>\n<!-- made by hand -->\n<!DOCTYPE svg PUBLIC><svg>"),
            Some(SVG)
        );
        assert_eq!(detect(b"<?xml version=\"1.0\"?><html>"), Some(HTML));
        assert_eq!(detect(b"<?xml version=\"1.0\"?><feed>"), Some("text/xml"));
        assert_eq!(detect(b"<svgx>"), None);
        assert_eq!(detect(b"hello"), None);
        assert_eq!(detect(PNG), Some("image/png"));
    }

    #[test]
    fn the_rule() {
        // Matches, aliases and containers pass.
        assert!(check("image/png", Some("image/png")).is_ok());
        assert!(check("IMAGE/JPG; q=1", Some("image/jpeg")).is_ok());
        assert!(check("application/zip", Some("application/epub+zip")).is_ok());
        assert!(
            check(
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                Some("application/zip")
            )
            .is_ok()
        );
        assert!(check("application/rss+xml", Some("text/xml")).is_ok());
        // Generic types claim nothing.
        assert!(check("application/octet-stream", Some("text/html")).is_ok());
        assert!(check("", Some("application/x-executable")).is_ok());
        // Unknown bytes under a type without a signature pass; under one with a signature not.
        assert!(check("text/plain", None).is_ok());
        assert!(check("text/html", None).is_ok());
        assert!(check("image/png", None).is_err());
        assert!(check("application/pdf", None).is_err());
        assert!(check("image/svg+xml", None).is_err());
        // Detected as something else.
        let e = check("image/png", Some("text/html")).unwrap_err();
        assert_eq!(e.detected.as_deref(), Some("text/html"));
        assert!(e.message().contains("text/html") && e.message().contains("image/png"));
        assert!(check("application/pdf", Some(EXE)).is_err());
        assert!(check("text/plain", Some("application/x-executable")).is_err());
        assert!(check("image/svg+xml", Some("text/html")).is_err());
    }

    #[test]
    fn the_sniffer_decides_once_the_prefix_is_full() {
        let mut s = Sniffer::new(Some("image/png"), true);
        let mut html = b"<html>".to_vec();
        html.resize(PREFIX - 1, b' ');
        assert!(
            s.feed(&html).is_ok(),
            "not decided before the prefix is full"
        );
        assert!(s.feed(b"xx").is_err(), "decided by the chunk that fills it");

        let mut s = Sniffer::new(Some("image/png"), false);
        s.feed(b"<html>").unwrap();
        assert_eq!(s.finish(), Ok(Some(HTML)));

        let mut s = Sniffer::new(Some("image/png"), true);
        s.feed(&PNG[..5]).unwrap();
        s.feed(&PNG[5..]).unwrap();
        assert_eq!(s.finish(), Ok(Some("image/png")));
    }
}
