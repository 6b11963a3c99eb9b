//! Upload links: their hosted page, and the links API that creates, lists and revokes them.

use crate::helpers::*;
use crate::linkkit::{link_form, post_form};

async fn create_link(
    app: &TestApp,
    bucket: &str,
    max_files: Option<u64>,
) -> postgate::db::links::LinkRecord {
    let link = postgate::links::new_link(
        bucket,
        "in/",
        16,
        None,
        max_files,
        std::time::Duration::from_secs(3600),
        ADMIN_AK,
    );
    let l = link.clone();
    app.state
        .db
        .write(move |c| postgate::db::links::insert(c, &l))
        .await
        .unwrap();
    link
}

async fn post_link(
    app: &TestApp,
    url: &str,
    fields: &[(String, String)],
    name: &str,
    body: &[u8],
) -> Resp {
    post_form(
        app,
        url,
        fields,
        &[("Content-Type", "text/plain")],
        name,
        body,
    )
    .await
}

#[tokio::test]
async fn upload_link_page_renders_and_enforces_its_limits() {
    let app = spawn_app().await;
    app.create_bucket("links").await;
    let link = create_link(&app, "links", Some(2)).await;
    let page = app
        .http
        .get(format!("{}/-/u/{}", app.base, link.token))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form id=\"upload-form\"") && html.contains("name=\"policy\""));
    assert!(html.contains("2 more files accepted"));

    let (url, fields) = link_form(&app, &link.token, "").await;
    post_link(&app, &url, &fields, "a.txt", b"one")
        .await
        .assert_status(201);
    post_link(&app, &url, &fields, "big.txt", &[b'x'; 17])
        .await
        .assert_error(400, "EntityTooLarge");
    post_link(&app, &url, &fields, "b.txt", b"two")
        .await
        .assert_status(201);
    // Full: the third upload is refused even with a policy signed before.
    let full = post_link(&app, &url, &fields, "c.txt", b"three").await;
    full.assert_error(403, "AccessDenied");
    assert!(full.text().contains("all the files it accepts"));
    assert_eq!(&app.get("/links/in/a.txt").await.body[..], b"one");
    app.get("/links/in/c.txt")
        .await
        .assert_error(404, "NoSuchKey");
    let gone = app
        .http
        .get(format!("{}/-/u/{}", app.base, link.token))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
}

#[tokio::test]
async fn revoked_and_unknown_links_show_a_clear_page() {
    let app = spawn_app().await;
    app.create_bucket("revoked").await;
    let link = create_link(&app, "revoked", None).await;
    let (url, fields) = link_form(&app, &link.token, "").await;
    let token = link.token.clone();
    app.state
        .db
        .write(move |c| postgate::db::links::revoke(c, &token))
        .await
        .unwrap();
    let res = app
        .http
        .get(format!("{}/-/u/{}", app.base, link.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);
    let html = res.text().await.unwrap();
    assert!(html.contains("revoked") && !html.contains("panicked"));
    post_link(&app, &url, &fields, "a.txt", b"x")
        .await
        .assert_error(403, "AccessDenied");
    let res = app
        .http
        .get(format!("{}/-/u/not-a-token", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("does not exist"));
}

/// Calls the links API with a Bearer token; answers the response and its JSON (if any).
async fn links_api(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    who: (&str, &str),
    body: Option<serde_json::Value>,
) -> (Resp, serde_json::Value) {
    let mut req = app
        .http
        .request(method, format!("{}/-/api/links{path}", app.base))
        .header("authorization", format!("Bearer {}:{}", who.0, who.1));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let res = Resp::read(req.send().await.unwrap()).await;
    let json = serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null);
    (res, json)
}

#[tokio::test]
async fn links_api_creates_a_link_that_uploads_lists_it_and_revokes_it() {
    let app = spawn_app().await;
    app.create_bucket("apilinks").await;
    let admin = (ADMIN_AK, ADMIN_SK);
    let (res, link) = links_api(
        &app,
        reqwest::Method::POST,
        "",
        admin,
        Some(
            serde_json::json!({"bucket": "apilinks", "prefix": "inbox/", "max_size": "1KiB",
                                "expires_in": "2d", "max_files": 1, "content_type": "text/"}),
        ),
    )
    .await;
    res.assert_status(201);
    assert_eq!(link["bucket"], "apilinks");
    assert_eq!(link["prefix"], "inbox/");
    assert_eq!(link["max_size"], 1024);
    assert_eq!(link["max_files"], 1);
    assert_eq!(link["active"], true);
    let url = link["url"].as_str().unwrap();
    let token = url.rsplit_once("/-/u/").unwrap().1;
    assert!(url.starts_with(&app.base), "{url}");
    let expires = time::OffsetDateTime::parse(
        link["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::hours(47) && left <= time::Duration::hours(48));

    // The link's limits are the policy's: size and type refused, then one file stored.
    let page = app.http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let (post_url, fields) = link_form(&app, token, "").await;
    post_link(&app, &post_url, &fields, "big.txt", &[b'x'; 1025])
        .await
        .assert_error(400, "EntityTooLarge");
    post_link(&app, &post_url, &fields, "note.txt", b"hello")
        .await
        .assert_status(201);
    let got = app.get("/apilinks/inbox/note.txt").await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"hello");

    let (res, listed) = links_api(&app, reqwest::Method::GET, "", admin, None).await;
    res.assert_status(200);
    let listed = listed["links"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], link["id"]);
    assert_eq!(listed[0]["uploaded_files"], 1);
    assert_eq!(listed[0]["active"], false, "max_files reached");

    let id = link["id"].as_str().unwrap();
    let (res, _) = links_api(
        &app,
        reqwest::Method::DELETE,
        &format!("/{id}"),
        admin,
        None,
    )
    .await;
    res.assert_status(204);
    let (_, listed) = links_api(&app, reqwest::Method::GET, "", admin, None).await;
    assert_eq!(listed["links"][0]["revoked"], true);
    let gone = app.http.get(url).send().await.unwrap();
    assert_eq!(gone.status(), 410);
}

#[tokio::test]
async fn links_api_checks_permission_ownership_and_input() {
    let app = spawn_app().await;
    app.create_bucket("linkperm").await;
    let reader = app.create_key("reader").await;
    app.allow("linkperm", &reader.ak, postgate::db::buckets::Perm::Read)
        .await;
    let writer = app.create_key("writer").await;
    app.allow("linkperm", &writer.ak, postgate::db::buckets::Perm::Write)
        .await;
    let body = serde_json::json!({"bucket": "linkperm"});
    let post = reqwest::Method::POST;

    let (res, json) = links_api(
        &app,
        post.clone(),
        "",
        (&reader.ak, &reader.sk),
        Some(body.clone()),
    )
    .await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(json["error"]["code"], "AccessDenied");
    let (res, _) = links_api(
        &app,
        post.clone(),
        "",
        (ADMIN_AK, "wrong"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(res.status, 403);
    let unsigned = app
        .http
        .post(format!("{}/-/api/links", app.base))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);

    let (res, mine) = links_api(
        &app,
        post.clone(),
        "",
        (&writer.ak, &writer.sk),
        Some(body.clone()),
    )
    .await;
    res.assert_status(201);
    assert_eq!(mine["max_size"], 100 << 20, "default 100 MiB");
    let (res, theirs) = links_api(
        &app,
        post.clone(),
        "",
        (ADMIN_AK, ADMIN_SK),
        Some(body.clone()),
    )
    .await;
    res.assert_status(201);

    // A key sees and revokes only its own links; the admin key sees all.
    let (_, listed) = links_api(
        &app,
        reqwest::Method::GET,
        "",
        (&writer.ak, &writer.sk),
        None,
    )
    .await;
    let ids: Vec<_> = listed["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].clone())
        .collect();
    assert_eq!(ids, vec![mine["id"].clone()]);
    let (_, listed) = links_api(&app, reqwest::Method::GET, "", (ADMIN_AK, ADMIN_SK), None).await;
    assert_eq!(listed["links"].as_array().unwrap().len(), 2);
    let other = format!("/{}", theirs["id"].as_str().unwrap());
    let (res, json) = links_api(
        &app,
        reqwest::Method::DELETE,
        &other,
        (&writer.ak, &writer.sk),
        None,
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(json["error"]["code"], "NoSuchLink");
    let (_, listed) = links_api(&app, reqwest::Method::GET, "", (ADMIN_AK, ADMIN_SK), None).await;
    assert!(
        listed["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["revoked"] == false)
    );

    for bad in [
        serde_json::json!({"bucket": "linkperm", "max_size": "6GiB"}),
        serde_json::json!({"bucket": "linkperm", "max_size": 0}),
        serde_json::json!({"bucket": "linkperm", "expires_in": 0}),
        serde_json::json!({"bucket": "linkperm", "expires_in": "400d"}),
        serde_json::json!({"bucket": "linkperm", "max_files": 0}),
        serde_json::json!({"bucket": "linkperm", "max_size": "ten"}),
        serde_json::json!({"bucket": "linkperm", "colour": "red"}),
    ] {
        let (res, json) = links_api(
            &app,
            post.clone(),
            "",
            (ADMIN_AK, ADMIN_SK),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
        assert_eq!(json["error"]["code"], "InvalidRequest", "{bad}");
    }
    let (res, json) = links_api(
        &app,
        post,
        "",
        (ADMIN_AK, ADMIN_SK),
        Some(serde_json::json!({"bucket": "nosuchbucket"})),
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(json["error"]["code"], "NoSuchBucket");
}

/// The page at `/-/u/{token}` with an `Accept-Language` header (or none): status, headers, HTML.
async fn page_in(
    app: &TestApp,
    token: &str,
    lang: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = app.http.get(format!("{}/-/u/{token}", app.base));
    if let Some(l) = lang {
        req = req.header("accept-language", l);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.text().await.unwrap())
}

#[tokio::test]
async fn the_page_speaks_the_visitors_language() {
    let app = spawn_app().await;
    app.create_bucket("langs").await;
    let link = create_link(&app, "langs", Some(3)).await;

    // French first, by quality, and a regional tag falls back to its language.
    for header in [
        "fr-CA",
        "de-DE, fr;q=0.8, en;q=0.5",
        "en;q=0.3, fr-BE;q=0.9",
    ] {
        let (status, headers, html) = page_in(&app, &link.token, Some(header)).await;
        assert_eq!(status, 200, "{header}");
        assert!(html.contains("<html lang=\"fr\">"), "{header}");
        assert_eq!(headers["content-language"], "fr");
        assert!(
            headers["vary"]
                .to_str()
                .unwrap()
                .contains("Accept-Language")
        );
        assert!(html.contains("<h1>Envoyer des fichiers</h1>"), "{header}");
        assert!(html.contains("3 fichiers de plus acceptés"));
        assert!(html.contains(">Envoyer</button>"));
        assert!(html.contains("Ce lien expire "));
        assert!(!html.contains("Upload files") && !html.contains("more files accepted"));
        // The script's words, French, in the form (HTML-escaped JSON).
        let i18n = html.split("data-i18n=\"").nth(1).unwrap();
        let i18n = i18n.split('"').next().unwrap().replace("&#34;", "\"");
        let words: serde_json::Value = serde_json::from_str(&i18n).unwrap();
        assert_eq!(words["status.cancelled"], "Annulé : rien n’a été conservé.");
        assert_eq!(words["upload_n"]["other"], "Envoyer {n} fichiers");
    }
    // Nothing it speaks (or no header): English.
    for header in [None, Some("de, es;q=0.5"), Some("fr;q=0, de")] {
        let (_, headers, html) = page_in(&app, &link.token, header).await;
        assert!(html.contains("<html lang=\"en\">"), "{header:?}");
        assert_eq!(headers["content-language"], "en");
        assert!(html.contains("<h1>Upload files</h1>") && html.contains("3 more files accepted"));
    }

    // Error pages too: a revoked link, an unknown one, the no-script "received" page.
    let token = link.token.clone();
    app.state
        .db
        .write(move |c| postgate::db::links::revoke(c, &token))
        .await
        .unwrap();
    let (status, _, html) = page_in(&app, &link.token, Some("fr")).await;
    assert_eq!(status, 410);
    assert!(html.contains("Lien indisponible") && html.contains("Ce lien d’envoi a été révoqué."));
    // The page's script asks for a policy per file: the refusal it shows is French too.
    let res = app
        .http
        .get(format!("{}/-/u/{}/policy", app.base, link.token))
        .header("accept-language", "fr")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);
    let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(json["error"]["message"], "Ce lien d’envoi a été révoqué.");
    let (status, _, html) = page_in(&app, "no-such-token", Some("fr-FR")).await;
    assert_eq!(status, 404);
    assert!(html.contains("Ce lien d’envoi n’existe pas."), "{html}");
    let res = app
        .http
        .get(format!(
            "{}/-/u/{}/done?bucket=b&key=k&etag=e",
            app.base, link.token
        ))
        .header("accept-language", "fr")
        .send()
        .await
        .unwrap();
    assert!(res.text().await.unwrap().contains("<h1>Fichier reçu</h1>"));
}

#[tokio::test]
async fn the_expiry_is_a_time_element_with_a_utc_fallback() {
    let app = spawn_app().await;
    app.create_bucket("times").await;
    let link = create_link(&app, "times", None).await;
    let at = time::OffsetDateTime::from_unix_timestamp(link.expires_at / 1000).unwrap();
    let iso = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (_, _, html) = page_in(&app, &link.token, None).await;
    // The exact instant for the script (which shows it in the visitor's zone and words), and
    // the date in words, UTC, for a page without script.
    let datetime = html
        .split("<time datetime=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a <time datetime> on the page");
    let parsed =
        time::OffsetDateTime::parse(datetime, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(
        parsed.unix_timestamp(),
        at.unix_timestamp(),
        "{datetime} vs {}",
        iso(at)
    );
    let months = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let words = format!(
        "on {} {} {}, {:02}:{:02} UTC",
        at.day(),
        months[u8::from(at.month()) as usize - 1],
        at.year(),
        at.hour(),
        at.minute()
    );
    assert!(
        html.contains(&format!(
            "This link expires <time datetime=\"{datetime}\" title=\"{words}\">{words}</time>."
        )),
        "{html}"
    );
    assert!(!html.contains("GMT"));
}

/// A server whose page sends files above `threshold` in parts of `part_size` (the
/// `--link-multipart-threshold` and `--link-part-size` settings): its base URL and state.
async fn spawn_with_link_parts(
    threshold: u64,
    part_size: u64,
) -> (
    String,
    postgate::AppState,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = postgate::Config::for_data_dir(dir.path());
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    config.link_uploads = postgate::config::LinkUploads {
        multipart_threshold: threshold,
        part_size,
    };
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(postgate::serve(listener, state.clone(), async move {
        stop_rx.await.ok();
    }));
    (base, state, dir, stop)
}

#[tokio::test]
async fn the_pages_multipart_threshold_and_part_size_are_settings() {
    let (base, state, _dir, _stop) = spawn_with_link_parts(5 << 20, 5 << 20).await;
    let http = reqwest::Client::new();
    let host = base.trim_start_matches("http://").to_owned();
    req_to(&base, &host, &http, reqwest::Method::PUT, "/parts")
        .send()
        .await
        .assert_status(200);
    let mut link = postgate::links::new_link(
        "parts",
        "in/",
        20 << 20,
        None,
        Some(2),
        std::time::Duration::from_secs(3600),
        ADMIN_AK,
    );
    link.max_size = 20 << 20;
    let l = link.clone();
    state
        .db
        .write(move |c| postgate::db::links::insert(c, &l))
        .await
        .unwrap();
    let html = http
        .get(format!("{base}/-/u/{}", link.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("data-multipart-threshold=\"5242880\""),
        "{html}"
    );
    let body = serde_json::json!({"filename": "v.bin", "size": 12 << 20, "content_type": "application/octet-stream"});
    let res = http
        .post(format!("{base}/-/u/{}/uploads", link.token))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let started: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(started["part_size"], 5 << 20, "{started}");
    assert_eq!(started["part_count"], 3, "{started}");
}
