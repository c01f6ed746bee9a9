//! Key verification hot path: the cached check that every authenticated request pays, the
//! rejection of an unknown key id (no hashing), and, for scale, one Argon2id verification (what
//! only the first request with a value pays).
//!
//! Run: `cargo bench --bench key_verification`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jiff::Timestamp;
use keyward::cms::keys::KeyRecord;
use keyward::cms::secret::{new_key_id, RawKey};
use keyward::cms::verifier::{CacheCheck, KeyEntry, StoredHash, Verifier};
use keyward::model::{ContentPermission, KeySpec};
use std::hint::black_box;

fn entry(id: &str, raw: &RawKey) -> KeyEntry {
    let now = Timestamp::now();
    let record = KeyRecord {
        id: id.to_owned(),
        spec: KeySpec {
            name: format!("bench-{id}"),
            default_permissions: vec![ContentPermission::Get],
            expires_at: Some(now + keyward::model::days(365)),
            ..Default::default()
        },
        created_at: now,
        updated_at: now,
        rotated_at: None,
        previous_valid_until: None,
        earlier_values_valid_until: Vec::new(),
    };
    KeyEntry::new(
        record,
        vec![StoredHash {
            phc: raw.hash(),
            valid_until: None,
        }],
    )
}

fn verification(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let verifier = Verifier::new();
    // A realistic index: 1,000 keys, one of them the one under test.
    let mut target = None;
    for i in 0..1000 {
        let id = new_key_id();
        let raw = RawKey::generate(&id);
        if i == 500 {
            verifier.upsert(entry(&id, &raw));
            target = Some(raw);
        } else {
            // Other keys need no real hash for lookups to be realistic.
            let now = Timestamp::now();
            verifier.upsert(KeyEntry::new(
                KeyRecord {
                    id: id.clone(),
                    spec: KeySpec {
                        name: id.clone(),
                        ..Default::default()
                    },
                    created_at: now,
                    updated_at: now,
                    rotated_at: None,
                    previous_valid_until: None,
                    earlier_values_valid_until: Vec::new(),
                },
                vec![],
            ));
        }
    }
    let raw = target.expect("target key");
    rt.block_on(verifier.verify(raw.expose(), |_| Ok(())))
        .expect("first verification");
    let now = Timestamp::now().as_millisecond();

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cached_hit", |b| {
        b.iter(
            || match verifier.check_cached(black_box(raw.expose()), now) {
                CacheCheck::Hit(e) => e,
                _ => panic!("expected a cache hit"),
            },
        )
    });
    // The floor's other part: one SHA-256 of a value's secret (the unknown-id path plus this
    // is what a cached check cannot go below).
    let (_, secret) = keyward::cms::secret::key_parts(raw.expose()).expect("an issued value");
    g.bench_function("sha256_of_a_secret", |b| {
        b.iter(|| keyward::cms::secret::digest(black_box(secret)))
    });
    let unknown = RawKey::generate(&new_key_id());
    g.bench_function("unknown_key_id_rejected", |b| {
        b.iter(
            || match verifier.check_cached(black_box(unknown.expose()), now) {
                CacheCheck::Rejected(r) => r,
                _ => panic!("expected a rejection"),
            },
        )
    });
    g.finish();

    let mut slow = c.benchmark_group("argon2id");
    slow.sample_size(10);
    let phc = raw.hash();
    slow.bench_function("first_check_verify", |b| {
        b.iter(|| assert!(raw.verify(black_box(&phc))))
    });
    slow.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
