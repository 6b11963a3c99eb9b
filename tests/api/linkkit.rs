//! What the link tests share: the admin JSON API, links made through it, the page's form, and
//! posting a form to it.

use reqwest::Method;

use crate::helpers::*;

/// A link made through the JSON API: (public id, token).
pub async fn make_link(app: &TestApp, spec: serde_json::Value) -> (String, String) {
    let (res, json) = api(
        app,
        Method::POST,
        "/-/api/links",
        (ADMIN_AK, ADMIN_SK),
        spec,
    )
    .await;
    res.assert_status(201);
    let url = json["url"].as_str().unwrap();
    let token = url.rsplit_once("/-/u/").unwrap().1.to_owned();
    (json["id"].as_str().unwrap().to_owned(), token)
}

/// A JSON API call with a Bearer token.
pub async fn api(
    app: &TestApp,
    method: Method,
    path: &str,
    who: (&str, &str),
    body: serde_json::Value,
) -> (Resp, serde_json::Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("authorization", format!("Bearer {}:{}", who.0, who.1));
    if !body.is_null() {
        req = req.body(body.to_string());
    }
    let res = Resp::read(req.send().await.unwrap()).await;
    let json = serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null);
    (res, json)
}

/// An unauthenticated call to a link route (`/-/u/...`), JSON in and out.
pub async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (Resp, serde_json::Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.base));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = Resp::read(req.send().await.unwrap()).await;
    let json = serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null);
    (res, json)
}

/// The page's form: `/-/u/{token}/policy`, with an optional query (`filename=..&type=..`).
pub async fn link_form(app: &TestApp, token: &str, query: &str) -> (String, Vec<(String, String)>) {
    let (res, json) = call(
        app,
        Method::GET,
        &format!("/-/u/{token}/policy{query}"),
        None,
    )
    .await;
    res.assert_status(200);
    let fields = json["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (json["url"].as_str().unwrap().to_owned(), fields)
}

/// Posts `fields`, then `extra` fields, then the file.
pub async fn post_form(
    app: &TestApp,
    url: &str,
    fields: &[(String, String)],
    extra: &[(&str, &str)],
    name: &str,
    body: &[u8],
) -> Resp {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.clone(), v.clone());
    }
    for (k, v) in extra {
        form = form.text(k.to_string(), v.to_string());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(body.to_vec()).file_name(name.to_owned()),
    );
    Resp::read(app.http.post(url).multipart(form).send().await.unwrap()).await
}
