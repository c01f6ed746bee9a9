//! The Kubernetes API emulator's own tests, through a real `kube::Client`.

mod support;

use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{finalizer, watcher, WatchStreamExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::kube_emulator::Emulator;

/// An emulator with the namespaces these tests write to.
fn emulator() -> Emulator {
    let emu = Emulator::new();
    for ns in ["ns", "a", "b", "other"] {
        emu.add_namespace(ns);
    }
    emu
}

fn cm(name: &str, labels: serde_json::Value, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .unwrap()
}

#[tokio::test]
async fn crud_selectors_and_conflicts() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let a = api
        .create(
            &PostParams::default(),
            &cm("a", json!({"app": "x"}), json!({"k": "1"})),
        )
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &cm("b", json!({"app": "y"}), json!({})),
    )
    .await
    .unwrap();
    let e = api
        .create(&PostParams::default(), &cm("a", json!({}), json!({})))
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 409), "{e}");
    let picked = api
        .list(&ListParams::default().labels("app=x"))
        .await
        .unwrap();
    assert_eq!(picked.items.len(), 1);
    assert_eq!(
        api.list(&ListParams::default().labels("app in (x,y)"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        api.list(&ListParams::default().labels("app!=x"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // A stale resourceVersion is a 409.
    let mut stale = a.clone();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    stale.data = Some([("k".to_owned(), "3".to_owned())].into());
    let e = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 409), "{e}");
    assert!(matches!(api.get("zzz").await.unwrap_err(), kube::Error::Api(ref s) if s.code == 404));
    // Other namespaces are separate.
    let other: Api<ConfigMap> = Api::namespaced(emu.client(), "other");
    assert!(other
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        Api::<ConfigMap>::all(emu.client())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

#[tokio::test]
async fn no_op_writes_change_nothing_and_generation_tracks_spec() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let a = api
        .create(
            &PostParams::default(),
            &cm("a", json!({}), json!({"k": "1"})),
        )
        .await
        .unwrap();
    let rv = a.metadata.resource_version.clone();
    let same = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version, rv,
        "a no-op patch keeps the resourceVersion"
    );
    let before = emu.current_rv();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "1"}})),
    )
    .await
    .unwrap();
    assert_eq!(emu.current_rv(), before);
    let changed = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "2"}})),
        )
        .await
        .unwrap();
    assert_ne!(changed.metadata.resource_version, rv);
    assert_eq!(changed.metadata.generation, Some(2));
    let labelled = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"l": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "metadata changes do not bump generation"
    );
}

#[tokio::test]
async fn status_subresource_is_separate() {
    let emu = emulator();
    let api: Api<keyward::policy::ApiKeyPolicy> = Api::namespaced(emu.client(), "ns");
    let p: keyward::policy::ApiKeyPolicy = serde_json::from_value(json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
        "metadata": {"name": "p"}, "spec": {"keys": []}
    }))
    .unwrap();
    api.create(&PostParams::default(), &p).await.unwrap();
    let st = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy", "status": {"observedGeneration": 1}});
    let out = api
        .patch_status("p", &PatchParams::apply("test").force(), &Patch::Apply(&st))
        .await
        .unwrap();
    assert_eq!(out.status.unwrap().observed_generation, Some(1));
    assert_eq!(
        out.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    // Status sent to the main resource is ignored.
    let out = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(out.status.unwrap().observed_generation, Some(1));
}

#[tokio::test]
async fn server_side_apply_owns_fields() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let obj = |data: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": data});
    let pp = PatchParams::apply("mine");
    let a = api
        .patch("a", &pp, &Patch::Apply(obj(json!({"x": "1", "y": "2"}))))
        .await
        .unwrap();
    let again = api
        .patch("a", &pp, &Patch::Apply(obj(json!({"x": "1", "y": "2"}))))
        .await
        .unwrap();
    assert_eq!(
        a.metadata.resource_version, again.metadata.resource_version,
        "re-applying the same is a no-op"
    );
    let dropped = api
        .patch("a", &pp, &Patch::Apply(obj(json!({"x": "1"}))))
        .await
        .unwrap();
    assert_eq!(
        dropped.data.unwrap().keys().collect::<Vec<_>>(),
        ["x"],
        "fields no longer applied are removed"
    );
    let e = api
        .patch(
            "a",
            &PatchParams::apply("theirs"),
            &Patch::Apply(obj(json!({"x": "other"}))),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 409), "{e}");
    let forced = api
        .patch(
            "a",
            &PatchParams::apply("theirs").force(),
            &Patch::Apply(obj(json!({"x": "other"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["x"], "other");
}

/// Faults for one object, for reads, and dropped watches: a write to one object fails while
/// the others go through; reads (not watches) fail a set number of times; an open watch is
/// ended with an in-stream 410, and kube's watcher lists again and carries on.
#[tokio::test]
async fn faults_hit_one_object_or_reads_and_watches_can_be_dropped() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let pp = PostParams::default();
    for name in ["a", "b"] {
        api.create(&pp, &cm(name, json!({}), json!({})))
            .await
            .unwrap();
    }
    emu.fail_writes_to("configmaps", "a", 422, usize::MAX);
    let change = Patch::Merge(json!({"data": {"x": "1"}}));
    let e = api
        .patch("a", &PatchParams::default(), &change)
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 422), "{e}");
    api.patch("b", &PatchParams::default(), &change)
        .await
        .unwrap();
    emu.fail_reads("configmaps", 503, 2);
    for _ in 0..2 {
        assert!(api.get("b").await.is_err());
    }
    assert!(
        api.get("b").await.is_ok(),
        "two reads failed, then they work"
    );
    emu.heal("configmaps");
    api.patch("a", &PatchParams::default(), &change)
        .await
        .unwrap();

    // A dropped watch: the runtime watcher relists and still sees what comes after.
    let (store, writer) = kube::runtime::reflector::store::<ConfigMap>();
    let stream = watcher(api.clone(), watcher::Config::default())
        .reflect(writer)
        .applied_objects();
    let seen = tokio::spawn(async move {
        let mut names = Vec::new();
        futures::pin_mut!(stream);
        // The 410 comes through as an error; the watcher goes on with a fresh list.
        while let Some(item) = stream.next().await {
            if let Ok(o) = item {
                names.push(o.metadata.name.unwrap_or_default());
                if names.contains(&"c".to_owned()) {
                    return names;
                }
            }
        }
        names
    });
    store.wait_until_ready().await.unwrap();
    emu.drop_watches("configmaps");
    api.create(&pp, &cm("c", json!({}), json!({})))
        .await
        .unwrap();
    let names = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the watcher saw c after its watch was dropped")
        .unwrap();
    assert!(names.contains(&"c".to_owned()), "{names:?}");
}

/// A watch with a label selector sees an object that stops matching as DELETED (its previous
/// content, at the change's resourceVersion) and one that starts matching as ADDED, as the API
/// server's watch cache sends them (staging/src/k8s.io/apiserver/pkg/storage/cacher/
/// cache_watcher.go, convertToWatchEvent). A credential Secret that loses its label must
/// leave the operator's store.
#[tokio::test]
async fn a_selector_watch_sees_objects_leave_and_join_the_selection() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let pp = PostParams::default();
    api.create(
        &pp,
        &cm("a", json!({"role": "credential"}), json!({"x": "1"})),
    )
    .await
    .unwrap();
    let wp = kube::api::WatchParams::default().labels("role=credential");
    let mut events = api.watch(&wp, "0").await.unwrap().boxed();
    async fn next(
        events: &mut futures::stream::BoxStream<
            'static,
            kube::Result<kube::api::WatchEvent<ConfigMap>>,
        >,
    ) -> kube::api::WatchEvent<ConfigMap> {
        match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
            Ok(Some(Ok(e))) => e,
            other => panic!("no event: {other:?}"),
        }
    }
    assert!(
        matches!(next(&mut events).await, kube::api::WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("a"))
    );
    let unlabel = json!({"metadata": {"labels": {"role": null}}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    match next(&mut events).await {
        kube::api::WatchEvent::Deleted(c) => {
            assert_eq!(
                c.metadata.labels.unwrap_or_default()["role"],
                "credential",
                "the previous content"
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    // Changes while it does not match are not sent; matching again is ADDED.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "2"}})),
    )
    .await
    .unwrap();
    let relabel = json!({"metadata": {"labels": {"role": "credential"}}});
    api.patch("a", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    match next(&mut events).await {
        kube::api::WatchEvent::Added(c) => assert_eq!(c.data.unwrap()["x"], "2"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

/// Every write records its fields' manager, not only applies: a POST's fields are its
/// manager's, and another manager's apply of one of them with another value conflicts
/// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management).
#[tokio::test]
async fn a_create_records_its_manager_and_an_apply_over_it_conflicts() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let pp = PostParams {
        field_manager: Some("creator".into()),
        ..Default::default()
    };
    api.create(&pp, &cm("a", json!({}), json!({"x": "1"})))
        .await
        .unwrap();
    assert_eq!(
        emu.managers_of("api/v1/configmaps", "ns", "a"),
        ["creator".to_owned()].into()
    );
    let e = api
        .patch(
            "a",
            &PatchParams::apply("other"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "2"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.message.contains("creator")),
        "{e}"
    );
}

/// A resourceVersion in an applied object is a precondition, as in any write: a stale one is
/// a 409 and changes nothing (the operator writes a Secret only at the version whose owner it
/// checked).
#[tokio::test]
async fn an_apply_with_a_stale_resource_version_is_a_conflict() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let pp = PatchParams::apply("mine").force();
    let first = api
        .patch("a", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}})))
        .await
        .unwrap();
    let seen = first.metadata.resource_version.clone().unwrap();
    api.patch("a", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "2"}})))
        .await
        .unwrap();
    let e = api
        .patch(
            "a",
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": seen}, "data": {"x": "3"}})),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 409), "{e}");
    let now = api.get("a").await.unwrap();
    assert_eq!(now.data.unwrap()["x"], "2");
    let current = now.metadata.resource_version.unwrap();
    let ok = api
        .patch(
            "a",
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": current}, "data": {"x": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(ok.data.unwrap()["x"], "3");
    assert!(
        ok.metadata.resource_version.is_some(),
        "the version is the server's, never dropped"
    );
}

/// A struct whose fields a manager no longer applies goes with them, not left as `{}`:
/// server-side apply removes the fields "no longer present in the applied configuration" that
/// only this manager owned, and a map it created is one of its fields
/// (https://kubernetes.io/docs/reference/using-api/server-side-apply/#field-management). The
/// operator takes a policy's `status.connection` away this way after an offboarding.
#[tokio::test]
async fn server_side_apply_removes_a_struct_it_no_longer_applies() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let pp = PatchParams::apply("mine");
    let obj = |extra: serde_json::Value| {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}});
        if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        o
    };
    api.patch(
        "a",
        &pp,
        &Patch::Apply(obj(json!({"binaryData": {"b": "YQ=="}}))),
    )
    .await
    .unwrap();
    assert!(emu.get("api/v1/configmaps", "ns", "a").unwrap()["binaryData"].is_object());
    api.patch("a", &pp, &Patch::Apply(obj(json!({}))))
        .await
        .unwrap();
    let stored = emu.get("api/v1/configmaps", "ns", "a").unwrap();
    assert!(stored.get("binaryData").is_none(), "{stored}");
    assert_eq!(stored["data"]["x"], "1");
}

#[tokio::test]
async fn watch_streams_history_bookmarks_and_410() {
    let emu = emulator();
    let client = emu.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let first = api
        .create(&PostParams::default(), &cm("a", json!({}), json!({})))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &cm("b", json!({}), json!({})))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(
            o.metadata.name.as_deref(),
            Some("b"),
            "replays what came after rv"
        ),
        other => panic!("{other:?}"),
    }
    api.delete("a", &DeleteParams::default()).await.unwrap();
    loop {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Deleted(o)) => {
                assert_eq!(o.metadata.name.as_deref(), Some("a"));
                break;
            }
            Some(WatchEvent::Bookmark(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
    emu.compact();
    let mut stale = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match stale.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn runtime_watcher_sees_changes_and_metadata_only_watches_hide_data() {
    let emu = emulator();
    let client = emu.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ns");
    let stream = watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default(),
    )
    .applied_objects()
    .boxed();
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s", "labels": {"l": "v"}}, "stringData": {}, "data": {"k": "dmFsdWU="}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), stream.take(1).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(got[0].as_ref().unwrap().data.is_some());

    // What kube's metadata-only requests get, as raw JSON: metadata, never data.
    let req = kube::core::Request::new("/api/v1/namespaces/ns/secrets");
    let watch = req
        .watch_metadata(&WatchParams::default().timeout(1), "0")
        .unwrap();
    let resp = client
        .send(watch.map(kube::client::Body::from))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut text = Vec::new();
    while !text.ends_with(b"\n") {
        let frame = body.frame().await.expect("an event").unwrap();
        if let Ok(data) = frame.into_data() {
            text.extend_from_slice(&data);
        }
    }
    let event: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(event["type"], "ADDED", "{event}");
    let object = event["object"].as_object().unwrap();
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["apiVersion", "kind", "metadata"],
        "{event}"
    );
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert_eq!(object["metadata"]["name"], "s");
    assert_eq!(object["metadata"]["labels"], json!({"l": "v"}));
    let list = client
        .request_text(req.list_metadata(&ListParams::default()).unwrap())
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    let item = list["items"][0].as_object().unwrap();
    assert_eq!(
        item.keys().collect::<Vec<_>>(),
        ["apiVersion", "kind", "metadata"],
        "{list}"
    );
    let one = client
        .request_text(req.get_metadata("s", &Default::default()).unwrap())
        .await
        .unwrap();
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert!(
        one.get("data").is_none() && one["metadata"]["name"] == "s",
        "{one}"
    );
}

#[tokio::test]
async fn injected_write_failures_hit_one_resource_a_set_number_of_times() {
    let emu = emulator();
    let client = emu.client();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ns");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let secret = |name: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    emu.fail_writes("secrets", 500, 2);
    for name in ["a", "b"] {
        let e = secrets
            .create(&PostParams::default(), &secret(name))
            .await
            .unwrap_err();
        assert!(matches!(e, kube::Error::Api(ref s) if s.code == 500), "{e}");
    }
    maps.create(&PostParams::default(), &cm("m", json!({}), json!({})))
        .await
        .expect("other resources are not affected");
    secrets
        .create(&PostParams::default(), &secret("c"))
        .await
        .expect("two failures, then writes go through");
    assert!(
        secrets.get_opt("a").await.unwrap().is_none(),
        "a failed write wrote nothing"
    );
    emu.fail_writes("secrets", 403, usize::MAX);
    for name in ["d", "e", "f"] {
        assert!(secrets
            .create(&PostParams::default(), &secret(name))
            .await
            .is_err());
    }
    assert!(secrets.get("c").await.is_ok(), "reads are not affected");
    emu.heal("secrets");
    secrets
        .create(&PostParams::default(), &secret("g"))
        .await
        .unwrap();
}

#[tokio::test]
async fn finalizers_delay_deletion_and_owner_references_cascade() {
    let emu = emulator();
    let client = emu.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let owner = api
        .create(&PostParams::default(), &cm("owner", json!({}), json!({})))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "ns");
    let child: Secret = serde_json::from_value(json!({"metadata": {"name": "child", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.clone().unwrap()}]}})).unwrap();
    secrets
        .create(&PostParams::default(), &child)
        .await
        .unwrap();

    // kube's finalizer helper: add, then on deletion clean up and remove.
    let run = |obj: ConfigMap| {
        let api = api.clone();
        async move {
            finalizer(
                &api,
                "test.keyward.dev/cleanup",
                Arc::new(obj),
                |ev| async move {
                    Ok::<_, std::io::Error>(match ev {
                        finalizer::Event::Apply(_) | finalizer::Event::Cleanup(_) => {
                            kube::runtime::controller::Action::await_change()
                        }
                    })
                },
            )
            .await
        }
    };
    run(api.get("owner").await.unwrap()).await.unwrap();
    assert_eq!(
        api.get("owner").await.unwrap().metadata.finalizers.unwrap(),
        ["test.keyward.dev/cleanup"]
    );
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("owner").await.unwrap();
    assert!(
        deleting.metadata.deletion_timestamp.is_some(),
        "finalizers hold the object"
    );
    assert!(
        secrets.get("child").await.is_ok(),
        "dependents live while the owner does"
    );
    run(deleting).await.unwrap();
    assert!(
        matches!(api.get("owner").await.unwrap_err(), kube::Error::Api(ref s) if s.code == 404)
    );
    // Collected apart from the owner's deletion, a moment later.
    support::eventually(
        "the dependent collected",
        Duration::from_secs(5),
        || async {
            matches!(secrets.get("child").await, Err(kube::Error::Api(ref s)) if s.code == 404)
        },
    )
    .await;
}

/// Deleting a namespace as the API server does: it turns Terminating, its content is deleted
/// (an object with a finalizer waits for it), nothing new can be created in it, and it goes
/// when it is empty.
#[tokio::test]
async fn deleting_a_namespace_deletes_its_content_and_waits_for_finalizers() {
    use k8s_openapi::api::core::v1::Namespace;
    let emu = emulator();
    let client = emu.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    api.create(&PostParams::default(), &cm("plain", json!({}), json!({})))
        .await
        .unwrap();
    let mut held = cm("held", json!({}), json!({}));
    held.metadata.finalizers = Some(vec!["test.keyward.dev/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    elsewhere
        .create(&PostParams::default(), &cm("plain", json!({}), json!({})))
        .await
        .unwrap();

    namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap();
    let n = namespaces.get("team").await.unwrap();
    assert!(n.metadata.deletion_timestamp.is_some());
    assert_eq!(
        n.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert!(api.get_opt("plain").await.unwrap().is_none());
    let held = api.get("held").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "waits for its finalizer"
    );
    let refused = api
        .create(&PostParams::default(), &cm("new", json!({}), json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, kube::Error::Api(ref e) if e.code == 403),
        "{refused:?}"
    );
    assert!(
        elsewhere.get_opt("plain").await.unwrap().is_some(),
        "other namespaces keep theirs"
    );

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("held").await.unwrap().is_none());
    assert!(
        namespaces.get_opt("team").await.unwrap().is_none(),
        "gone once empty"
    );
}

/// Server-side apply creates an object, but not through its status subresource: a status
/// apply on an object that does not exist is a 404, as the API server answers.
#[tokio::test]
async fn status_apply_on_a_missing_object_is_not_found() {
    use keyward::policy::ApiKeyPolicy;
    let emu = emulator();
    let api: Api<ApiKeyPolicy> = Api::namespaced(emu.client(), "shop");
    let status = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy", "status": {"keyCount": 1}});
    let e = api
        .patch_status(
            "ghost",
            &PatchParams::apply("keyward"),
            &Patch::Apply(&status),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref r) if r.code == 404),
        "{e:?}"
    );
    assert!(emu
        .get("apis/keyward.dev/v1alpha1/apikeypolicies", "shop", "ghost")
        .is_none());
}

/// Lists come in pages for `limit`, with a `continue` token, as the API server gives them;
/// a deletion request on an object with finalizers bumps its generation.
#[tokio::test]
async fn lists_are_paged_and_a_deletion_bumps_the_generation() {
    use keyward::policy::ApiKeyPolicy;
    let emu = emulator();
    let client = emu.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), json!({}), json!({})),
        )
        .await
        .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let third = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(&second.metadata.continue_.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(third.items.len(), 1);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());
    let names: Vec<String> = [first, second, third]
        .iter()
        .flat_map(|l| l.items.iter().map(|c| c.metadata.name.clone().unwrap()))
        .collect();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    // kube's watcher pages too, and sees every object.
    let all: Vec<ConfigMap> = watcher(api.clone(), watcher::Config::default().page_size(2))
        .applied_objects()
        .take(5)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 5);

    let policies: Api<ApiKeyPolicy> = Api::namespaced(client, "ns");
    let p: ApiKeyPolicy = serde_json::from_value(
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
        "metadata": {"name": "p", "finalizers": ["keyward.dev/revoke-keys"]},
        "spec": {"keys": [{"name": "k", "defaultPermissions": ["GET"], "secret": {"name": "s"}}]}}),
    )
    .unwrap();
    let created = policies.create(&PostParams::default(), &p).await.unwrap();
    policies
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = policies.get("p").await.unwrap();
    assert_eq!(
        deleting.metadata.generation,
        created.metadata.generation.map(|g| g + 1)
    );
}

/// Strategic merge patch as the API server applies it to a Deployment: containers and their
/// env merged by name, `$patch: delete` removes one, finalizers unioned, other lists replaced;
/// a custom resource refuses it (415).
#[tokio::test]
async fn strategic_merge_patch_merges_lists_by_their_keys() {
    use k8s_openapi::api::apps::v1::Deployment;
    let emu = emulator();
    let api: Api<Deployment> = Api::namespaced(emu.client(), "ns");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "finalizers": ["a/one"]},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "tolerations": [{"key": "x", "operator": "Exists"}]
            }}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    let patch = json!({
        "metadata": {"finalizers": ["b/two"]},
        "spec": {"template": {
            "metadata": {"annotations": {"keyward.dev/secret-web": "h1"}},
            "spec": {
                "containers": [
                    {"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
                    {"name": "sidecar", "$patch": "delete"}
                ],
                "tolerations": [{"key": "y", "operator": "Exists"}]
            }}}
    });
    let got = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let v = serde_json::to_value(&got).unwrap();
    assert_eq!(v["metadata"]["finalizers"], json!(["a/one", "b/two"]));
    let spec = &v["spec"]["template"]["spec"];
    assert_eq!(spec["containers"].as_array().unwrap().len(), 1, "{spec}");
    assert_eq!(spec["containers"][0]["image"], "app:1");
    assert_eq!(
        spec["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
    );
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "y", "operator": "Exists"}])
    );
    assert_eq!(
        v["spec"]["template"]["metadata"]["annotations"]["keyward.dev/secret-web"],
        "h1"
    );
    // A merge patch replaces the lists it names.
    let merge =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "o:1"}]}}}});
    let got = api
        .patch("web", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .unwrap();
    let names: Vec<String> = got
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["only"]);
    // Custom resources take no strategic merge patch.
    let policies: Api<keyward::policy::ApiKeyPolicy> = Api::namespaced(emu.client(), "ns");
    let e = policies
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(&json!({"spec": {}})),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 415), "{e}");
}

/// Garbage collection stays in the owner's namespace: a namespaced owner owns nothing in
/// another namespace, even an object whose ownerReference names its uid.
/// Garbage collection as Kubernetes does it
/// (https://kubernetes.io/docs/concepts/overview/working-with-objects/owners-dependents/):
/// "a namespaced owner must exist in the same namespace as the dependent. If it does not, the
/// owner reference is treated as absent, and the dependent is subject to deletion once all
/// owners are verified absent". So a dependent naming an owner in another namespace is
/// collected although that owner exists; the same-namespace dependent lives until its owner
/// goes, and is collected apart from that deletion (asynchronously), not within it.
#[tokio::test]
async fn garbage_collection_treats_an_owner_in_another_namespace_as_absent() {
    let emu = emulator();
    let owners: Api<ConfigMap> = Api::namespaced(emu.client(), "a");
    let owner = owners
        .create(&PostParams::default(), &cm("owner", json!({}), json!({})))
        .await
        .unwrap();
    let owner_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.clone().unwrap()}]);
    for ns in ["a", "b"] {
        let api: Api<ConfigMap> = Api::namespaced(emu.client(), ns);
        let dep: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "dep", "ownerReferences": owner_ref}}),
        )
        .unwrap();
        api.create(&PostParams::default(), &dep).await.unwrap();
    }
    support::eventually(
        "the dependent in another namespace collected",
        Duration::from_secs(5),
        || async { emu.get("api/v1/configmaps", "b", "dep").is_none() },
    )
    .await;
    assert!(
        emu.get("api/v1/configmaps", "a", "dep").is_some(),
        "its owner is there: kept"
    );
    // A dangling owner reference (no such uid anywhere) is an absent owner too.
    let c: Api<ConfigMap> = Api::namespaced(emu.client(), "a");
    let dangling: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dangling",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "no-such-uid"}]}}))
    .unwrap();
    c.create(&PostParams::default(), &dangling).await.unwrap();
    owners
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        emu.get("api/v1/configmaps", "a", "dep").is_some(),
        "not within the owner's deletion: collection comes after"
    );
    support::eventually(
        "the dependents collected",
        Duration::from_secs(5),
        || async {
            emu.get("api/v1/configmaps", "a", "dep").is_none()
                && emu.get("api/v1/configmaps", "a", "dangling").is_none()
        },
    )
    .await;
}

fn code_of(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

/// Server-side apply merges `ownerReferences` by `uid` and `finalizers` as a set, element by
/// element, instead of replacing the list (`+listType=map`, `+listMapKey=uid` and
/// `+listType=set` on ObjectMeta in staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go;
/// https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy): two
/// managers' references live side by side, and a manager that stops applying its own takes
/// only that one away.
#[tokio::test]
async fn server_side_apply_merges_owner_references_by_uid_and_finalizers_as_a_set() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    for owner in ["o1", "o2"] {
        api.create(&PostParams::default(), &cm(owner, json!({}), json!({})))
            .await
            .unwrap();
    }
    let uid = |n: &str| emu.get("api/v1/configmaps", "ns", n).unwrap()["metadata"]["uid"].clone();
    let applied = |refs: serde_json::Value, finalizers: serde_json::Value| {
        Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "dep", "ownerReferences": refs, "finalizers": finalizers}}))
    };
    let reference =
        |n: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": uid(n)});
    api.patch(
        "dep",
        &PatchParams::apply("one"),
        &applied(json!([reference("o1")]), json!(["one.example/f"])),
    )
    .await
    .unwrap();
    let both = api
        .patch(
            "dep",
            &PatchParams::apply("two"),
            &applied(json!([reference("o2")]), json!(["two.example/f"])),
        )
        .await
        .unwrap();
    let names = |c: &ConfigMap| {
        c.metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&both), ["o1", "o2"]);
    assert_eq!(
        both.metadata.finalizers.unwrap(),
        ["one.example/f", "two.example/f"]
    );
    // "one" applies no reference and no finalizer now: its own go, "two"'s stay.
    let after = api
        .patch(
            "dep",
            &PatchParams::apply("one"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "dep"}, "data": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(names(&after), ["o2"]);
    assert_eq!(after.metadata.finalizers.unwrap(), ["two.example/f"]);
}

/// At most one owner reference may be the controller (ValidateOwnerReferences in
/// staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go): 422 for a create, an
/// apply or a patch that would make two.
#[tokio::test]
async fn a_second_controller_reference_is_invalid() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "ns");
    let controller = |n: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": format!("uid-{n}"), "controller": true});
    let two: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dep",
        "ownerReferences": [controller("a"), controller("b")]}}))
    .unwrap();
    let e = api.create(&PostParams::default(), &two).await.unwrap_err();
    assert_eq!(code_of(&e), 422, "{e}");
    assert!(
        e.to_string()
            .contains("Only one reference can have Controller set to true"),
        "{e}"
    );
    let one: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dep",
        "ownerReferences": [controller("a")]}}))
    .unwrap();
    api.create(&PostParams::default(), &one).await.unwrap();
    let e = api
        .patch(
            "dep",
            &PatchParams::apply("other"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "dep", "ownerReferences": [controller("b")]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&e),
        422,
        "merged by uid, the apply would make two: {e}"
    );
}

/// A Secret's `type` cannot change, nor the content of a Secret or ConfigMap marked
/// `immutable: true` (ValidateSecretUpdate and ValidateConfigMapUpdate in
/// pkg/apis/core/validation/validation.go;
/// https://kubernetes.io/docs/concepts/configuration/secret/#secret-immutable).
#[tokio::test]
async fn immutable_fields_are_refused() {
    let emu = emulator();
    let secrets: Api<Secret> = Api::namespaced(emu.client(), "ns");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let e = secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "kubernetes.io/tls"})),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 422, "{e}");
    assert!(e.to_string().contains("type: Invalid value"), "{e}");
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"immutable": true})),
        )
        .await
        .unwrap();
    for change in [json!({"data": {"k": "dzI="}}), json!({"immutable": false})] {
        let e = secrets
            .patch("s", &PatchParams::default(), &Patch::Merge(change.clone()))
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), 422, "{change}: {e}");
    }
    // Labels are not content: still writable.
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
}

/// A field selector may name only the fields the resource supports (`metadata.name`,
/// `metadata.namespace`, and per type, e.g. a Secret's `type`): anything else is 400 "field
/// label not supported" (the API server's field label conversion, e.g.
/// pkg/registry/core/secret/strategy.go), for lists and watches alike.
#[tokio::test]
async fn an_unknown_field_selector_is_a_bad_request() {
    let emu = emulator();
    let secrets: Api<Secret> = Api::namespaced(emu.client(), "ns");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "type": "Opaque"})).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    for selector in ["type=Opaque", "metadata.name=s", "metadata.name!=t"] {
        let got = secrets
            .list(&ListParams::default().fields(selector))
            .await
            .unwrap();
        assert_eq!(got.items.len(), 1, "{selector}");
    }
    let e = secrets
        .list(&ListParams::default().fields("spec.nothing=x"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 400, "{e}");
    assert!(
        e.to_string()
            .contains("field label not supported: spec.nothing"),
        "{e}"
    );
    let e = secrets
        .watch(&WatchParams::default().fields("data.k=x"), "0")
        .await
        .err()
        .expect("refused");
    assert_eq!(code_of(&e), 400, "{e}");
}

/// Creating in a namespace that does not exist is 404, in one being deleted 403, for an apply
/// that would create as for a POST (the NamespaceLifecycle admission plugin,
/// plugin/pkg/admission/namespace/lifecycle/admission.go).
#[tokio::test]
async fn an_apply_cannot_create_in_a_missing_or_terminating_namespace() {
    let emu = emulator();
    let apply = |ns: &str| {
        let api: Api<ConfigMap> = Api::namespaced(emu.client(), ns);
        async move {
            api.patch(
                "c",
                &PatchParams::apply("me"),
                &Patch::Apply(
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
                ),
            )
            .await
        }
    };
    assert_eq!(code_of(&apply("nowhere").await.unwrap_err()), 404);
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["x.example/hold"]}}),
    )
    .unwrap();
    Api::<ConfigMap>::namespaced(emu.client(), "other")
        .create(&PostParams::default(), &held)
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(emu.client())
        .delete("other", &DeleteParams::default())
        .await
        .unwrap();
    let e = apply("other").await.unwrap_err();
    assert_eq!(code_of(&e), 403, "{e}");
    assert!(
        e.to_string().contains("because it is being terminated"),
        "{e}"
    );
    apply("ns").await.unwrap();
}

/// RBAC as the API server enforces it
/// (https://kubernetes.io/docs/reference/access-authn-authz/rbac/), with the chart's own rules
/// on the operator's service account: what they grant passes, anything else is 403 in the API
/// server's words and recorded; a Role bound in one namespace grants nothing cluster-scoped or
/// elsewhere; and a Role or RoleBinding the operator writes may not grant more than it holds
/// (privilege escalation prevention). The tests' own client is a cluster admin.
#[tokio::test]
async fn the_charts_rbac_binds_the_operator_and_nobody_else() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use support::kube_rbac::Grants;
    let emu = emulator();
    emu.enforce_rbac(Grants::chart(None));
    let operator = emu.operator_client();
    let secrets: Api<Secret> = Api::namespaced(operator.clone(), "ns");
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    secrets.get("s").await.unwrap();
    let e = secrets
        .delete("s", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 403, "{e}");
    assert!(e.to_string().contains("secrets \"s\" is forbidden: User \"system:serviceaccount:keyward-system:keyward\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"ns\""), "{e}");
    let e = Api::<ConfigMap>::namespaced(operator.clone(), "ns")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 403, "{e}");
    assert_eq!(
        emu.denied(),
        [
            "delete secrets in the namespace \"ns\"",
            "list configmaps in the namespace \"ns\""
        ]
    );
    // The admin is not held to it.
    Api::<Secret>::namespaced(emu.client(), "ns")
        .delete("s", &DeleteParams::default())
        .await
        .unwrap();

    // A Role for a reader: get on Secrets, which the operator holds; delete it does not.
    let roles: Api<Role> = Api::namespaced(operator.clone(), "ns");
    let role = |verbs: serde_json::Value| -> Role {
        serde_json::from_value(json!({"metadata": {"name": "r"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s"], "verbs": verbs}]}))
        .unwrap()
    };
    let e = roles
        .create(&PostParams::default(), &role(json!(["get", "delete"])))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 403, "{e}");
    assert!(
        e.to_string()
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{e}"
    );
    roles
        .create(&PostParams::default(), &role(json!(["get"])))
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "ns"}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(operator.clone(), "ns")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // A Role its admin widened cannot be bound by the operator.
    Api::<Role>::namespaced(emu.client(), "ns")
        .patch("r", &PatchParams::default(), &Patch::Merge(json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]}]})))
        .await
        .unwrap();
    let mut other = binding.clone();
    other.metadata.name = Some("b2".into());
    let e = Api::<RoleBinding>::namespaced(operator.clone(), "ns")
        .create(&PostParams::default(), &other)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 403, "{e}");

    // Confined to one namespace (operator.watchNamespace): nothing elsewhere, nothing
    // cluster-scoped; its Lease in the release namespace.
    let confined = emulator();
    confined.add_namespace("keyward-system");
    confined.enforce_rbac(Grants::chart(Some("ns")));
    let operator = confined.operator_client();
    Api::<Secret>::namespaced(operator.clone(), "ns")
        .list(&ListParams::default())
        .await
        .unwrap();
    for e in [
        Api::<Secret>::namespaced(operator.clone(), "other")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
        Api::<Secret>::all(operator.clone())
            .list(&ListParams::default())
            .await
            .unwrap_err(),
        Api::<k8s_openapi::api::core::v1::Namespace>::all(operator.clone())
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(code_of(&e), 403, "{e}");
    }
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(operator, "keyward-system")
        .list(&ListParams::default())
        .await
        .unwrap();
}

/// keyward's CRD schema (crds/keyward.dev.yaml) applies to writes of its resources as the API
/// server applies a structural schema
/// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema):
/// unknown fields are pruned, defaults filled in, and a value of the wrong type, outside an
/// enum, against a pattern or over a length is 422 naming each field. An update is held only
/// to what it changes (validation ratcheting): a field stored under an older, looser schema
/// and left alone does not block it.
#[tokio::test]
async fn keywards_crd_schema_prunes_defaults_and_refuses_what_it_does_not_allow() {
    use keyward::policy::ApiKeyPolicy;
    let emu = emulator();
    let policies: Api<ApiKeyPolicy> = Api::namespaced(emu.client(), "ns");
    let post = |spec: serde_json::Value| {
        let client = emu.client();
        async move {
            let req =
                http::Request::post("/apis/keyward.dev/v1alpha1/namespaces/ns/apikeypolicies")
                    .header("content-type", "application/json")
                    .body(
                        serde_json::to_vec(
                            &json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
                    "metadata": {"name": "p"}, "spec": spec}),
                        )
                        .unwrap(),
                    )
                    .unwrap();
            client.request::<serde_json::Value>(req).await
        }
    };
    let key = json!({"name": "reader", "defaultPermissions": ["GET"], "secret": {"name": "s"}});
    let e = post(
        json!({"keys": [{"name": "Bad Name", "defaultPermissions": ["FETCH"],
        "expiresAfter": 90, "secret": {"name": "s"}}]}),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), 422, "{e}");
    let told = e.to_string();
    for expected in [
        "ApiKeyPolicy.keyward.dev \"p\" is invalid: [",
        "spec.keys[0].name: Invalid value: \"Bad Name\": spec.keys[0].name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        "spec.keys[0].defaultPermissions[0]: Unsupported value: \"FETCH\"",
        "spec.keys[0].expiresAfter: Invalid value: \"integer\": spec.keys[0].expiresAfter in body must be of type string",
    ] {
        assert!(told.contains(expected), "{expected}\nin {told}");
    }
    // A typo'd field is dropped, not kept; defaults are filled in.
    let made = post(json!({"keys": [key], "deletionPolicy": "Delete", "keyz": []}))
        .await
        .unwrap();
    assert!(made["spec"].get("keyz").is_none(), "{made}");
    assert_eq!(made["spec"]["managementPolicy"], "Manage", "{made}");
    assert_eq!(made["spec"]["keys"][0]["kind"], "content", "{made}");

    // Stored under a looser schema: an update that leaves that field alone passes, one that
    // sets it to another invalid value does not.
    emu.store_as_is(
        "/apis/keyward.dev/v1alpha1/namespaces/ns/apikeypolicies",
        json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy", "metadata": {"name": "old"},
            "spec": {"keys": [{"name": "reader", "defaultPermissions": ["GET"], "expiresAfter": "1y".repeat(20),
                "secret": {"name": "s"}}]}}),
    );
    policies
        .patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    let e = policies
        .patch(
            "old",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([{"op": "replace", "path": "/spec/keys/0/expiresAfter", "value": "2y".repeat(20)}])).unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 422, "{e}");
    assert!(
        e.to_string()
            .contains("spec.keys[0].expiresAfter: Too long: may not be more than 32 bytes"),
        "{e}"
    );
}
