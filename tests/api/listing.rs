//! ListObjectsV2 and ListObjects (v1).

use reqwest::Method;

use crate::helpers::{ADMIN_AK, TestApp, spawn_app, xml_blocks, xml_tag, xml_tags};

async fn app_with_keys(keys: &[&str]) -> TestApp {
    let app = spawn_app().await;
    app.create_bucket("list").await;
    for k in keys {
        app.put_object("list", k, k.as_bytes()).await;
    }
    app
}

async fn list(app: &TestApp, query: &str) -> String {
    let res = app.req(Method::GET, "/list").query(query).send().await;
    res.assert_status(200);
    res.text()
}

fn keys(text: &str) -> Vec<String> {
    xml_blocks(text, "Contents")
        .iter()
        .filter_map(|c| xml_tag(c, "Key"))
        .collect()
}

fn prefixes(text: &str) -> Vec<String> {
    xml_blocks(text, "CommonPrefixes")
        .iter()
        .filter_map(|c| xml_tag(c, "Prefix"))
        .collect()
}

fn enc(s: &str) -> String {
    postgate::auth::sigv4::uri_encode(s, true)
}

#[tokio::test]
async fn list_v2_returns_every_key_with_size_etag_and_count() {
    let app = app_with_keys(&["one", "two", "three"]).await;
    let text = list(&app, "list-type=2").await;
    assert!(text.contains("<ListBucketResult"), "{text}");
    assert_eq!(keys(&text), ["one", "three", "two"]);
    assert_eq!(xml_tag(&text, "KeyCount").as_deref(), Some("3"));
    assert_eq!(xml_tag(&text, "IsTruncated").as_deref(), Some("false"));
    assert_eq!(xml_tag(&text, "Name").as_deref(), Some("list"));
    let first = &xml_blocks(&text, "Contents")[0];
    assert_eq!(xml_tag(first, "Size").as_deref(), Some("3"));
    assert_eq!(
        xml_tag(first, "ETag").as_deref(),
        Some(crate::helpers::etag_of(b"one").as_str())
    );
    assert!(xml_tag(first, "LastModified").unwrap().ends_with('Z'));
    assert_eq!(xml_tag(first, "StorageClass").as_deref(), Some("STANDARD"));
}

#[tokio::test]
async fn list_v2_with_prefix_returns_only_matching_keys() {
    let app = app_with_keys(&["photos/a.jpg", "photos/b.jpg", "photosx", "videos/c.mp4"]).await;
    let text = list(&app, "list-type=2&prefix=photos%2F").await;
    assert_eq!(keys(&text), ["photos/a.jpg", "photos/b.jpg"]);
    assert_eq!(xml_tag(&text, "Prefix").as_deref(), Some("photos/"));
    let text = list(&app, "list-type=2&prefix=nothing").await;
    assert!(keys(&text).is_empty());
    assert_eq!(xml_tag(&text, "KeyCount").as_deref(), Some("0"));
}

#[tokio::test]
async fn list_v2_with_delimiter_rolls_up_common_prefixes() {
    let app = app_with_keys(&["a/1", "a/2", "b", "c/d/e", "c/f", "g"]).await;
    let text = list(&app, "list-type=2&delimiter=%2F").await;
    assert_eq!(keys(&text), ["b", "g"]);
    assert_eq!(prefixes(&text), ["a/", "c/"]);
    assert_eq!(xml_tag(&text, "KeyCount").as_deref(), Some("4"));
    assert_eq!(xml_tag(&text, "Delimiter").as_deref(), Some("/"));

    let text = list(&app, "list-type=2&delimiter=%2F&prefix=c%2F").await;
    assert_eq!(keys(&text), ["c/f"]);
    assert_eq!(prefixes(&text), ["c/d/"]);
}

/// Pages through with `max-keys` and continuation tokens; returns (keys, prefixes, pages).
async fn page_through(
    app: &TestApp,
    base_query: &str,
    max_keys: usize,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut all_keys, mut all_prefixes) = (Vec::new(), Vec::new());
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 100, "paging does not end");
        let mut q = format!("list-type=2&max-keys={max_keys}{base_query}");
        if let Some(t) = &token {
            q.push_str(&format!("&continuation-token={}", enc(t)));
        }
        let text = list(app, &q).await;
        let (k, p) = (keys(&text), prefixes(&text));
        assert!(k.len() + p.len() <= max_keys, "page too big: {text}");
        assert_eq!(
            xml_tag(&text, "KeyCount").unwrap(),
            (k.len() + p.len()).to_string()
        );
        if let Some(t) = &token {
            assert_eq!(
                xml_tag(&text, "ContinuationToken").as_deref(),
                Some(t.as_str())
            );
        }
        all_keys.extend(k);
        all_prefixes.extend(p);
        match xml_tag(&text, "IsTruncated").as_deref() {
            Some("true") => {
                token = Some(xml_tag(&text, "NextContinuationToken").expect("token"));
            }
            Some("false") => {
                assert_eq!(xml_tag(&text, "NextContinuationToken"), None);
                return (all_keys, all_prefixes, pages);
            }
            other => panic!("IsTruncated {other:?}"),
        }
    }
}

#[tokio::test]
async fn list_v2_pages_through_25_keys_7_at_a_time_exactly_once() {
    let names: Vec<String> = (0..25).map(|i| format!("key-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let app = app_with_keys(&refs).await;
    let (got, prefixes, pages) = page_through(&app, "", 7).await;
    assert_eq!(got, names);
    assert!(prefixes.is_empty());
    assert_eq!(pages, 4);
}

#[tokio::test]
async fn list_v2_pages_with_delimiter_when_prefixes_span_page_boundaries() {
    let mut names: Vec<String> = Vec::new();
    for d in ["a", "c", "e", "g"] {
        for i in 0..4 {
            names.push(format!("{d}/{i}"));
        }
    }
    for top in ["b", "d", "f", "h", "i"] {
        names.push(top.to_owned());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let app = app_with_keys(&refs).await;
    for max in [1, 2, 3, 4] {
        let (keys, prefixes, _) = page_through(&app, "&delimiter=%2F", max).await;
        assert_eq!(keys, ["b", "d", "f", "h", "i"], "max-keys {max}");
        assert_eq!(prefixes, ["a/", "c/", "e/", "g/"], "max-keys {max}");
    }
}

#[tokio::test]
async fn list_v2_start_after_skips_keys_up_to_it() {
    let app = app_with_keys(&["a", "b", "c", "d"]).await;
    let text = list(&app, "list-type=2&start-after=b").await;
    assert_eq!(keys(&text), ["c", "d"]);
    assert_eq!(xml_tag(&text, "StartAfter").as_deref(), Some("b"));
    let text = list(&app, "list-type=2&start-after=bb").await;
    assert_eq!(keys(&text), ["c", "d"]);
    let text = list(&app, "list-type=2&start-after=z").await;
    assert!(keys(&text).is_empty());
}

#[tokio::test]
async fn list_v2_shows_owner_only_with_fetch_owner() {
    let app = app_with_keys(&["k"]).await;
    let text = list(&app, "list-type=2").await;
    assert!(!text.contains("<Owner>"), "{text}");
    let text = list(&app, "list-type=2&fetch-owner=true").await;
    let owner = &xml_blocks(&text, "Owner")[0];
    assert_eq!(xml_tag(owner, "ID").as_deref(), Some(ADMIN_AK));
}

#[tokio::test]
async fn list_v2_with_encoding_type_url_encodes_keys() {
    let app = app_with_keys(&["a b+c", "dir one/x"]).await;
    let text = list(&app, "list-type=2&encoding-type=url").await;
    assert_eq!(xml_tag(&text, "EncodingType").as_deref(), Some("url"));
    assert_eq!(keys(&text), ["a+b%2Bc", "dir+one/x"]);
    let text = list(&app, "list-type=2&encoding-type=url&delimiter=%2F").await;
    assert_eq!(prefixes(&text), ["dir+one/"]);
    let res = app
        .req(Method::GET, "/list")
        .query("list-type=2&encoding-type=base64")
        .send()
        .await;
    res.assert_error(400, "InvalidArgument");
}

#[tokio::test]
async fn list_v2_with_bad_continuation_token_is_invalid_argument() {
    let app = app_with_keys(&["a"]).await;
    let res = app
        .req(Method::GET, "/list")
        .query("list-type=2&continuation-token=%21%21not-a-token%21%21")
        .send()
        .await;
    res.assert_error(400, "InvalidArgument");
    assert!(
        res.text()
            .contains("The continuation token provided is incorrect"),
        "{}",
        res.text()
    );
}

#[tokio::test]
async fn list_returns_keys_in_utf8_byte_order() {
    let app = app_with_keys(&["中", "~", "é", "z", "b", "a", "B"]).await;
    let text = list(&app, "list-type=2").await;
    let mut want = vec!["中", "~", "é", "z", "b", "a", "B"];
    want.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(want, ["B", "a", "b", "z", "~", "é", "中"]);
    assert_eq!(keys(&text), want);
}

#[tokio::test]
async fn list_v1_pages_with_marker_and_next_marker() {
    let names: Vec<String> = (0..10).map(|i| format!("obj{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let app = app_with_keys(&refs).await;
    let mut got = Vec::new();
    let mut marker = String::new();
    for page in 0.. {
        assert!(page < 20);
        let mut q = "max-keys=4".to_owned();
        if !marker.is_empty() {
            q.push_str(&format!("&marker={}", enc(&marker)));
        }
        let text = list(&app, &q).await;
        assert_eq!(xml_tag(&text, "Marker").as_deref(), Some(marker.as_str()));
        assert_eq!(xml_tag(&text, "KeyCount"), None, "v1 has no KeyCount");
        let k = keys(&text);
        got.extend(k.clone());
        if xml_tag(&text, "IsTruncated").as_deref() == Some("true") {
            let next = xml_tag(&text, "NextMarker").expect("NextMarker");
            assert_eq!(Some(&next), k.last());
            marker = next;
        } else {
            break;
        }
    }
    assert_eq!(got, names);
}

#[tokio::test]
async fn list_v1_marker_with_delimiter_skips_rolled_up_prefixes() {
    let app = app_with_keys(&["a/1", "a/2", "b", "c/1"]).await;
    let text = list(&app, "delimiter=%2F&max-keys=1").await;
    assert_eq!(prefixes(&text), ["a/"]);
    assert_eq!(xml_tag(&text, "NextMarker").as_deref(), Some("a/"));
    let text = list(&app, "delimiter=%2F&max-keys=1&marker=a%2F").await;
    assert_eq!(keys(&text), ["b"]);
    let text = list(&app, "delimiter=%2F&marker=b").await;
    assert_eq!(prefixes(&text), ["c/"]);
    assert_eq!(xml_tag(&text, "IsTruncated").as_deref(), Some("false"));
    assert!(xml_tags(&text, "Key").is_empty());
}

#[tokio::test]
async fn list_with_invalid_max_keys_is_invalid_argument() {
    let app = app_with_keys(&["a"]).await;
    for q in [
        "list-type=2&max-keys=abc",
        "list-type=2&max-keys=-1",
        "max-keys=x",
    ] {
        app.req(Method::GET, "/list")
            .query(q)
            .send()
            .await
            .assert_error(400, "InvalidArgument");
    }
}

#[tokio::test]
async fn list_with_max_keys_zero_returns_nothing_and_is_not_truncated() {
    let app = app_with_keys(&["a", "b"]).await;
    let text = list(&app, "list-type=2&max-keys=0").await;
    assert!(keys(&text).is_empty());
    assert_eq!(xml_tag(&text, "KeyCount").as_deref(), Some("0"));
    assert_eq!(xml_tag(&text, "MaxKeys").as_deref(), Some("0"));
}

#[tokio::test]
async fn continuation_token_takes_precedence_over_start_after() {
    let app = app_with_keys(&["a", "b", "c", "d"]).await;
    let first = list(&app, "list-type=2&max-keys=2&start-after=a").await;
    assert_eq!(keys(&first), ["b", "c"]);
    let token = xml_tag(&first, "NextContinuationToken").unwrap();
    let next = list(
        &app,
        &format!(
            "list-type=2&max-keys=2&start-after=a&continuation-token={}",
            enc(&token)
        ),
    )
    .await;
    assert_eq!(keys(&next), ["d"]);
    assert_eq!(xml_tag(&next, "StartAfter").as_deref(), Some("a"));
}
