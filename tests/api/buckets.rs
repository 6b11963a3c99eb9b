//! CreateBucket, HeadBucket, ListBuckets, DeleteBucket, GetBucketLocation, GetBucketAcl.

use reqwest::Method;

use crate::helpers::{ADMIN_AK, spawn_app, xml_blocks, xml_tag, xml_tags};

#[tokio::test]
async fn create_bucket_without_body_then_head_is_200() {
    let app = spawn_app().await;
    let res = app.req(Method::PUT, "/photos").send().await;
    res.assert_status(200);
    assert_eq!(res.header("location"), Some("/photos"));
    app.head("/photos").await.assert_status(200);
}

#[tokio::test]
async fn create_bucket_with_location_constraint_body() {
    let app = spawn_app().await;
    let body = r#"<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>us-east-1</LocationConstraint></CreateBucketConfiguration>"#;
    app.req(Method::PUT, "/configured")
        .body(body)
        .send()
        .await
        .assert_status(200);
    app.head("/configured").await.assert_status(200);
}

#[tokio::test]
async fn create_bucket_with_malformed_body_is_malformed_xml() {
    let app = spawn_app().await;
    app.req(Method::PUT, "/badbody")
        .body("<CreateBucketConfiguration><Loc")
        .send()
        .await
        .assert_error(400, "MalformedXML");
    app.head("/badbody").await.assert_status(404);
}

#[tokio::test]
async fn create_bucket_twice_is_already_owned_by_you() {
    let app = spawn_app().await;
    app.create_bucket("twice").await;
    let res = app.req(Method::PUT, "/twice").send().await;
    res.assert_error(409, "BucketAlreadyOwnedByYou");
    assert_eq!(xml_tag(&res.text(), "BucketName").as_deref(), Some("twice"));
}

#[tokio::test]
async fn create_bucket_with_invalid_name_is_invalid_bucket_name() {
    let app = spawn_app().await;
    for name in ["Upper", "ab", "under_score", "192.168.1.1", "-dash"] {
        app.req(Method::PUT, &format!("/{name}"))
            .send()
            .await
            .assert_error(400, "InvalidBucketName");
    }
}

#[tokio::test]
async fn head_missing_bucket_is_404_without_body() {
    let app = spawn_app().await;
    let res = app.head("/nothere").await;
    assert_eq!(res.status, 404);
    assert!(res.body.is_empty());
    assert!(res.header("x-amz-request-id").is_some());
}

#[tokio::test]
async fn list_buckets_shows_every_bucket_in_name_order() {
    let app = spawn_app().await;
    app.create_bucket("zeta").await;
    app.create_bucket("alpha").await;
    let res = app.get("/").await;
    res.assert_status(200);
    let text = res.text();
    assert!(text.contains("<ListAllMyBucketsResult"), "{text}");
    let names: Vec<String> = xml_blocks(&text, "Bucket")
        .iter()
        .filter_map(|b| xml_tag(b, "Name"))
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(xml_tags(&text, "CreationDate").len(), 2);
    assert_eq!(xml_tag(&text, "ID").as_deref(), Some(ADMIN_AK));
}

#[tokio::test]
async fn delete_empty_bucket_is_204_and_it_is_gone() {
    let app = spawn_app().await;
    app.create_bucket("gone").await;
    app.delete("/gone").await.assert_status(204);
    app.head("/gone").await.assert_status(404);
    app.delete("/gone").await.assert_error(404, "NoSuchBucket");
}

#[tokio::test]
async fn delete_non_empty_bucket_is_bucket_not_empty() {
    let app = spawn_app().await;
    app.create_bucket("full").await;
    app.put_object("full", "k", "v").await;
    app.delete("/full")
        .await
        .assert_error(409, "BucketNotEmpty");
    app.head("/full").await.assert_status(200);
    app.delete("/full/k").await.assert_status(204);
    app.delete("/full").await.assert_status(204);
}

#[tokio::test]
async fn get_bucket_location_is_empty_for_us_east_1() {
    let app = spawn_app().await;
    app.create_bucket("where").await;
    let res = app
        .req(Method::GET, "/where")
        .query("location")
        .send()
        .await;
    res.assert_status(200);
    let text = res.text();
    assert!(text.contains("LocationConstraint"), "{text}");
    assert_eq!(xml_tag(&text, "LocationConstraint").as_deref(), Some(""));
}

#[tokio::test]
async fn get_bucket_acl_gives_owner_full_control() {
    let app = spawn_app().await;
    app.create_bucket("acls").await;
    let res = app.req(Method::GET, "/acls").query("acl").send().await;
    res.assert_status(200);
    let text = res.text();
    assert!(text.contains("<AccessControlPolicy"), "{text}");
    let owner = &xml_blocks(&text, "Owner")[0];
    assert_eq!(xml_tag(owner, "ID").as_deref(), Some(ADMIN_AK));
    let grants = xml_blocks(&text, "Grant");
    assert_eq!(grants.len(), 1, "{text}");
    assert_eq!(
        xml_tag(&grants[0], "Permission").as_deref(),
        Some("FULL_CONTROL")
    );
    assert!(!text.contains("AllUsers"));
}

/// Requests read bucket rows through a cache; a change made through the server applies to the
/// very next request: ACL, CORS, deletion and re-creation.
#[tokio::test]
async fn bucket_changes_apply_to_the_next_request() {
    let app = spawn_app().await;
    app.create_bucket("live").await;
    app.put_object("live", "k", "v").await;
    let anonymous_list = || app.req(Method::GET, "/live").anonymous().send();

    anonymous_list().await.assert_error(403, "AccessDenied");
    let set_acl = |acl: &'static str| {
        app.req(Method::PUT, "/live")
            .query("acl")
            .header("x-amz-acl", acl)
            .send()
    };
    set_acl("public-read").await.assert_status(200);
    anonymous_list().await.assert_status(200);
    set_acl("private").await.assert_status(200);
    anonymous_list().await.assert_error(403, "AccessDenied");

    let preflight = || {
        app.http
            .request(Method::OPTIONS, format!("{}/live/k", app.base))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "PUT")
            .send()
    };
    assert_eq!(preflight().await.unwrap().status(), 403);
    let rules = "<CORSConfiguration><CORSRule><AllowedOrigin>https://app.example</AllowedOrigin>\
                 <AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>";
    app.req(Method::PUT, "/live")
        .query("cors")
        .body(rules)
        .send()
        .await
        .assert_status(200);
    let res = preflight().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    app.req(Method::DELETE, "/live")
        .query("cors")
        .send()
        .await
        .assert_status(204);
    assert_eq!(preflight().await.unwrap().status(), 403);

    app.delete("/live/k").await.assert_status(204);
    app.delete("/live").await.assert_status(204);
    app.put("/live/k", "v")
        .await
        .assert_error(404, "NoSuchBucket");
    app.create_bucket("live").await;
    app.put("/live/k", "again").await.assert_status(200);
    assert_eq!(&app.get("/live/k").await.body[..], b"again");
}

/// GET and HEAD take the bucket's row from the same cache (filled by the reads themselves):
/// an anonymous caller is still refused a private object whose bucket the owner's GET cached,
/// and a bucket deleted or re-created through the server is seen by the very next GET.
#[tokio::test]
async fn object_reads_through_the_bucket_cache_see_changes_at_once() {
    let app = spawn_app().await;
    app.create_bucket("seen").await;
    app.put_object("seen", "k", "v").await;
    let anonymous = |m: Method| app.req(m, "/seen/k").anonymous().send();
    for _ in 0..2 {
        assert_eq!(&app.get("/seen/k").await.body[..], b"v");
        anonymous(Method::GET)
            .await
            .assert_error(403, "AccessDenied");
        assert_eq!(anonymous(Method::HEAD).await.status, 403);
    }
    app.delete("/seen/k").await.assert_status(204);
    app.delete("/seen").await.assert_status(204);
    app.get("/seen/k").await.assert_error(404, "NoSuchBucket");
    assert_eq!(app.head("/seen/k").await.status, 404);
    app.create_bucket("seen").await;
    app.get("/seen/k").await.assert_error(404, "NoSuchKey");
    anonymous(Method::GET)
        .await
        .assert_error(403, "AccessDenied");
}
