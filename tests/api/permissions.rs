//! Who may do what: admin, bucket owners, granted keys, anonymous callers.

use postgate::db::buckets::Perm;
use reqwest::Method;

use crate::helpers::{Creds, TestApp, spawn_app, xml_blocks, xml_tag};

/// An app with the admin's bucket `adminb` holding `obj`, and a second key.
async fn setup() -> (TestApp, Creds) {
    let app = spawn_app().await;
    app.create_bucket("adminb").await;
    app.put_object("adminb", "obj", "admin data").await;
    let other = app.create_key("other").await;
    (app, other)
}

#[tokio::test]
async fn key_without_grants_is_denied_get_put_list() {
    let (app, other) = setup().await;
    app.req(Method::GET, "/adminb/obj")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::HEAD, "/adminb/obj")
        .creds(&other)
        .send()
        .await
        .assert_status(403);
    app.req(Method::PUT, "/adminb/new")
        .creds(&other)
        .body("x")
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::GET, "/adminb")
        .query("list-type=2")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::DELETE, "/adminb/obj")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::DELETE, "/adminb")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.get("/adminb/new").await.assert_error(404, "NoSuchKey");
    assert_eq!(app.get("/adminb/obj").await.text(), "admin data");
}

#[tokio::test]
async fn read_grant_allows_get_head_list_but_not_put_delete() {
    let (app, other) = setup().await;
    app.allow("adminb", &other.ak, Perm::Read).await;
    let res = app
        .req(Method::GET, "/adminb/obj")
        .creds(&other)
        .send()
        .await;
    res.assert_status(200);
    assert_eq!(res.text(), "admin data");
    app.req(Method::HEAD, "/adminb/obj")
        .creds(&other)
        .send()
        .await
        .assert_status(200);
    let res = app
        .req(Method::GET, "/adminb")
        .query("list-type=2")
        .creds(&other)
        .send()
        .await;
    res.assert_status(200);
    assert!(res.text().contains("<Key>obj</Key>"));
    app.req(Method::GET, "/adminb/missing")
        .creds(&other)
        .send()
        .await
        .assert_error(404, "NoSuchKey");
    app.req(Method::PUT, "/adminb/new")
        .creds(&other)
        .body("x")
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::DELETE, "/adminb/obj")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    assert_eq!(app.get("/adminb/obj").await.text(), "admin data");
}

#[tokio::test]
async fn write_grant_allows_put_delete_but_not_get() {
    let (app, other) = setup().await;
    app.allow("adminb", &other.ak, Perm::Write).await;
    app.req(Method::PUT, "/adminb/new")
        .creds(&other)
        .body("written by other")
        .send()
        .await
        .assert_status(200);
    assert_eq!(app.get("/adminb/new").await.text(), "written by other");
    app.req(Method::GET, "/adminb/obj")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::GET, "/adminb/new")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::GET, "/adminb")
        .query("list-type=2")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::DELETE, "/adminb/obj")
        .creds(&other)
        .send()
        .await
        .assert_status(204);
    app.get("/adminb/obj").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn bucket_owner_can_do_everything_on_its_bucket() {
    let (app, owner) = setup().await;
    app.req(Method::PUT, "/ownedb")
        .creds(&owner)
        .send()
        .await
        .assert_status(200);
    app.req(Method::PUT, "/ownedb/k")
        .creds(&owner)
        .body("mine")
        .send()
        .await
        .assert_status(200);
    let res = app.req(Method::GET, "/ownedb/k").creds(&owner).send().await;
    assert_eq!(res.text(), "mine");
    app.req(Method::HEAD, "/ownedb/k")
        .creds(&owner)
        .send()
        .await
        .assert_status(200);
    let res = app
        .req(Method::GET, "/ownedb")
        .query("list-type=2")
        .creds(&owner)
        .send()
        .await;
    assert!(res.text().contains("<Key>k</Key>"));
    let res = app
        .req(Method::GET, "/ownedb")
        .query("acl")
        .creds(&owner)
        .send()
        .await;
    res.assert_status(200);
    let owner_block = &xml_blocks(&res.text(), "Owner")[0];
    assert_eq!(
        xml_tag(owner_block, "ID").as_deref(),
        Some(owner.ak.as_str())
    );
    app.req(Method::PUT, "/ownedb/k")
        .creds(&owner)
        .query("acl")
        .header("x-amz-acl", "public-read")
        .send()
        .await
        .assert_status(200);
    app.req(Method::GET, "/ownedb/k")
        .anonymous()
        .send()
        .await
        .assert_status(200);
    app.req(Method::DELETE, "/ownedb/k")
        .creds(&owner)
        .send()
        .await
        .assert_status(204);
    app.req(Method::DELETE, "/ownedb")
        .creds(&owner)
        .send()
        .await
        .assert_status(204);
}

#[tokio::test]
async fn admin_can_act_on_buckets_it_does_not_own() {
    let (app, owner) = setup().await;
    app.req(Method::PUT, "/ownedb")
        .creds(&owner)
        .send()
        .await
        .assert_status(200);
    app.put_object("ownedb", "a", "by admin").await;
    assert_eq!(
        app.req(Method::GET, "/ownedb/a")
            .creds(&owner)
            .send()
            .await
            .text(),
        "by admin"
    );
}

#[tokio::test]
async fn other_key_cannot_read_a_bucket_another_non_admin_owns() {
    let (app, owner) = setup().await;
    let third = app.create_key("third").await;
    app.req(Method::PUT, "/ownedb")
        .creds(&owner)
        .send()
        .await
        .assert_status(200);
    app.req(Method::PUT, "/ownedb/k")
        .creds(&owner)
        .body("x")
        .send()
        .await
        .assert_status(200);
    app.req(Method::GET, "/ownedb/k")
        .creds(&third)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    // Someone else's bucket name is taken.
    app.req(Method::PUT, "/ownedb")
        .creds(&third)
        .send()
        .await
        .assert_error(409, "BucketAlreadyExists");
}

fn bucket_names(text: &str) -> Vec<String> {
    xml_blocks(text, "Bucket")
        .iter()
        .filter_map(|b| xml_tag(b, "Name"))
        .collect()
}

#[tokio::test]
async fn list_buckets_shows_a_key_only_its_own_and_granted_buckets() {
    let (app, other) = setup().await;
    app.create_bucket("granted").await;
    app.create_bucket("hidden").await;
    app.allow("granted", &other.ak, Perm::Read).await;
    app.req(Method::PUT, "/mine")
        .creds(&other)
        .send()
        .await
        .assert_status(200);
    let res = app.req(Method::GET, "/").creds(&other).send().await;
    res.assert_status(200);
    assert_eq!(bucket_names(&res.text()), ["granted", "mine"]);
    let res = app.get("/").await;
    assert_eq!(
        bucket_names(&res.text()),
        ["adminb", "granted", "hidden", "mine"]
    );
}

#[tokio::test]
async fn anonymous_list_buckets_is_access_denied() {
    let (app, _) = setup().await;
    app.req(Method::GET, "/")
        .anonymous()
        .send()
        .await
        .assert_error(403, "AccessDenied");
}

#[tokio::test]
async fn anonymous_callers_cannot_list_create_or_delete_buckets() {
    let (app, _) = setup().await;
    app.req(Method::GET, "/adminb")
        .anonymous()
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::PUT, "/anonb")
        .anonymous()
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::DELETE, "/adminb")
        .anonymous()
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.head("/anonb").await.assert_status(404);
}

#[tokio::test]
async fn read_grant_cannot_delete_objects_in_bulk() {
    let (app, other) = setup().await;
    app.allow("adminb", &other.ak, Perm::Read).await;
    let body = "<Delete><Object><Key>obj</Key></Object></Delete>";
    app.req(Method::POST, "/adminb")
        .query("delete")
        .header("content-md5", &crate::helpers::content_md5(body.as_bytes()))
        .body(body)
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    assert_eq!(app.get("/adminb/obj").await.text(), "admin data");
}

#[tokio::test]
async fn write_grant_cannot_delete_the_bucket_or_change_its_acl() {
    let (app, other) = setup().await;
    app.allow("adminb", &other.ak, Perm::ReadWrite).await;
    app.req(Method::DELETE, "/adminb/obj")
        .creds(&other)
        .send()
        .await
        .assert_status(204);
    app.req(Method::DELETE, "/adminb")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::PUT, "/adminb")
        .query("acl")
        .header("x-amz-acl", "public-read")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::GET, "/adminb")
        .query("acl")
        .creds(&other)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.head("/adminb").await.assert_status(200);
}

#[tokio::test]
async fn copy_needs_read_on_the_source_bucket() {
    let (app, other) = setup().await;
    app.req(Method::PUT, "/otherb")
        .creds(&other)
        .send()
        .await
        .assert_status(200);
    app.req(Method::PUT, "/otherb/stolen")
        .creds(&other)
        .header("x-amz-copy-source", "/adminb/obj")
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.get("/otherb/stolen")
        .await
        .assert_error(404, "NoSuchKey");
}
