//! Criterion: the vault's envelope encryption in process (`cargo bench -p vault-svc`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vault_svc::domain::crypto::{Aad, Key256};
use vault_svc::domain::envelope::{Envelope, KeyKind};

#[allow(clippy::expect_used)]
fn envelope(c: &mut Criterion) {
    let key = Key256::generate().expect("key");
    let aad = Aad::new("strongroom.vault.transit").with("tenant", b"bench").with("caller", b"auth");
    let mut group = c.benchmark_group("envelope");
    for size in [64usize, 1024, 16 * 1024] {
        let plaintext = vec![7u8; size];
        let sealed = Envelope::seal(KeyKind::Tenant, 1, &key, &aad, &plaintext).expect("seal").encode();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("seal/{size}"), |b| {
            b.iter(|| Envelope::seal(KeyKind::Tenant, 1, &key, &aad, &plaintext).expect("seal").encode())
        });
        group.bench_function(format!("open/{size}"), |b| {
            b.iter(|| Envelope::decode(&sealed).expect("decode").open(&key, &aad).expect("open"))
        });
    }
    group.finish();
}

criterion_group!(benches, envelope);
criterion_main!(benches);
