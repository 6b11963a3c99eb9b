//! The upload page's words in the visitor's language.
//!
//! Translations live in one JSON file per language (`templates/i18n/<lang>.json`), compiled into
//! the binary. English is complete; another language may lack a key, which then falls back to
//! English. A value is a string with `{name}` placeholders, or for counts an object of plural
//! forms (`{"one": ..., "other": ...}`). The page's script gets the same words (English
//! overlaid with the language's) in the form's `data-i18n`, so every word on the page, server-
//! or script-written, comes from these files.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

/// The languages the page speaks, English (the fallback) first: their code and their file.
const FILES: &[(&str, &str)] = &[
    ("en", include_str!("../../templates/i18n/en.json")),
    ("fr", include_str!("../../templates/i18n/fr.json")),
];

type Words = BTreeMap<String, Value>;

static LANGS: LazyLock<Vec<(&'static str, Words)>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(code, text)| {
            // The files are part of the source: a broken one fails the unit tests below.
            let words = serde_json::from_str(text).unwrap_or_else(|e| {
                tracing::error!(lang = code, error = %e, "translation file is not valid JSON");
                Words::new()
            });
            (*code, words)
        })
        .collect()
});

/// The words of one language, with English under them.
#[derive(Clone, Copy)]
pub struct Tr {
    /// The language's code (`<html lang>`, `Content-Language`, `Intl` in the script).
    pub lang: &'static str,
    words: &'static Words,
    english: &'static Words,
}

impl Tr {
    /// The language `Accept-Language` prefers among those the page speaks: tags by quality
    /// (header order among equals), each tried as written and then by its primary language
    /// (`fr-CA` → `fr`); English if none matches.
    pub fn negotiate(accept_language: Option<&str>) -> Tr {
        let wanted = accept_language
            .map(accept_language::parse_with_quality)
            .unwrap_or_default();
        wanted
            .iter()
            .filter(|(_, q)| *q > 0.0)
            .find_map(|(tag, _)| {
                let tag = tag.to_ascii_lowercase();
                let primary = tag.split('-').next().unwrap_or_default();
                Self::find(&tag).or_else(|| Self::find(primary))
            })
            .unwrap_or_else(Self::english)
    }

    /// The language of the request's `Accept-Language` header.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Tr {
        Self::negotiate(
            headers
                .get(axum::http::header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
        )
    }

    fn find(code: &str) -> Option<Tr> {
        let english = &LANGS[0].1;
        LANGS
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(lang, words)| Tr {
                lang,
                words,
                english,
            })
    }

    pub fn english() -> Tr {
        Tr {
            lang: LANGS[0].0,
            words: &LANGS[0].1,
            english: &LANGS[0].1,
        }
    }

    fn value(&self, key: &str) -> Option<&'static Value> {
        self.words.get(key).or_else(|| self.english.get(key))
    }

    /// The text of `key` (English if this language lacks it; the key itself if English does).
    pub fn get(&self, key: &str) -> String {
        match self.value(key) {
            Some(Value::String(s)) => s.clone(),
            _ => key.to_owned(),
        }
    }

    /// The text of `key` with each `{name}` replaced by its value.
    pub fn fmt(&self, key: &str, args: &[(&str, &str)]) -> String {
        args.iter().fold(self.get(key), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), value)
        })
    }

    /// The plural form of `key` for `n` (`{n}` replaced), by the language's rule.
    pub fn count(&self, key: &str, n: u64) -> String {
        let form = match (self.lang, n) {
            // French counts 0 and 1 as singular; English only 1.
            ("fr", 0 | 1) | (_, 1) => "one",
            _ => "other",
        };
        let text = match self.value(key) {
            Some(Value::Object(forms)) => forms
                .get(form)
                .or_else(|| forms.get("other"))
                .and_then(Value::as_str)
                .unwrap_or(key),
            _ => key,
        };
        text.replace("{n}", &n.to_string())
    }

    /// A message written in English elsewhere (a link's closed reason) in this language, when
    /// an English entry has exactly that text; else the message as it is.
    pub fn from_english(&self, message: &str) -> String {
        self.english
            .iter()
            .find(|(_, v)| v.as_str() == Some(message))
            .map(|(key, _)| self.get(key))
            .unwrap_or_else(|| message.to_owned())
    }

    /// Every word, English overlaid with this language's, as JSON for the page's script.
    pub fn script_words(&self) -> String {
        let mut all = self.english.clone();
        all.extend(self.words.iter().map(|(k, v)| (k.clone(), v.clone())));
        serde_json::to_string(&all).unwrap_or_else(|_| "{}".to_owned())
    }

    /// A date in words, in UTC: the page's text before its script shows the visitor's own
    /// time zone (and for a visitor without JavaScript).
    pub fn date_utc(&self, at: time::OffsetDateTime) -> String {
        let at = at.to_offset(time::UtcOffset::UTC);
        self.fmt(
            "date_utc",
            &[
                ("day", &at.day().to_string()),
                (
                    "month",
                    &self.get(&format!("month.{}", u8::from(at.month()))),
                ),
                ("year", &at.year().to_string()),
                ("time", &format!("{:02}:{:02}", at.hour(), at.minute())),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_parses_and_english_has_every_key() {
        for (code, text) in FILES {
            let words: Words = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("templates/i18n/{code}.json: {e}"));
            for key in words.keys() {
                assert!(
                    LANGS[0].1.contains_key(key),
                    "{code}.json has {key}, en.json not"
                );
            }
        }
        assert!(LANGS.iter().all(|(_, w)| !w.is_empty()));
    }

    #[test]
    fn accept_language_picks_by_quality_then_primary_language() {
        let lang = |h: Option<&str>| Tr::negotiate(h).lang;
        assert_eq!(lang(None), "en");
        assert_eq!(lang(Some("fr")), "fr");
        assert_eq!(lang(Some("fr-CA")), "fr");
        assert_eq!(lang(Some("FR-ca, en;q=0.5")), "fr");
        assert_eq!(lang(Some("de-DE, fr;q=0.8, en;q=0.6")), "fr");
        assert_eq!(lang(Some("en;q=0.4, fr-BE;q=0.9")), "fr");
        assert_eq!(lang(Some("en-GB, fr;q=0.9")), "en");
        assert_eq!(lang(Some("fr;q=0, de")), "en");
        assert_eq!(lang(Some("de, es")), "en");
        assert_eq!(lang(Some("*")), "en");
        assert_eq!(lang(Some(";;,,q=x")), "en");
    }

    #[test]
    fn a_missing_key_falls_back_to_english() {
        static FRENCH_WITHOUT: LazyLock<Words> = LazyLock::new(|| {
            let mut w = LANGS[1].1.clone();
            w.remove("upload");
            w.remove("files_left");
            w
        });
        let fr = Tr {
            lang: "fr",
            words: &FRENCH_WITHOUT,
            english: &LANGS[0].1,
        };
        assert_eq!(fr.get("upload"), "Upload");
        assert_eq!(fr.count("files_left", 2), "2 more files accepted");
        assert_eq!(fr.get("title"), "Envoyer des fichiers");
        assert_eq!(fr.get("no.such.key"), "no.such.key");
        let script: Words = serde_json::from_str(&fr.script_words()).unwrap();
        assert_eq!(script["upload"], "Upload");
        assert_eq!(script["title"], "Envoyer des fichiers");
    }

    #[test]
    fn plurals_dates_and_english_messages() {
        let (en, fr) = (Tr::english(), Tr::negotiate(Some("fr")));
        assert_eq!(en.count("files_left", 1), "1 more file accepted");
        assert_eq!(en.count("files_left", 0), "0 more files accepted");
        assert_eq!(fr.count("files_left", 0), "0 fichier de plus accepté");
        assert_eq!(fr.count("files_left", 3), "3 fichiers de plus acceptés");
        let at = time::macros::datetime!(2026-12-03 19:05:50 UTC);
        assert_eq!(en.date_utc(at), "3 December 2026, 19:05 UTC");
        assert_eq!(fr.date_utc(at), "3 décembre 2026 à 19:05 UTC");
        assert_eq!(
            fr.from_english("This upload link has been revoked."),
            "Ce lien d’envoi a été révoqué."
        );
        assert_eq!(fr.from_english("Something else."), "Something else.");
    }
}
