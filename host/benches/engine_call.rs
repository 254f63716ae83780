//! (d) of `make bench`: the cost of one engine call through the runtime,
//! with the real libvirt plugin against libvirt's test driver.
//! - `fresh`: what every API call pays: new store, instantiate from the
//!   `InstancePre`, call, drop (plus the capability call for `vm-list`).
//! - `warm`: the same export called on a live instance (the floor).
//! - `http engine`: a fresh call whose engine makes one request to its
//!   host's pinned HTTPS API, on a kept connection (the `http` grant's pool)
//!   and, beside it, on a new TLS connection each time (the API closes).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use openidcs::caps::{Capabilities, HostScope, http, libvirt, nat, proxy};
use openidcs::config::{Grant, PluginConfig};
use openidcs::plugin::{EngineTarget, PluginRuntime};
use openidcs::store::Store;

fn scope() -> Arc<HostScope> {
    api_scope("test:///default", None)
}

fn api_scope(uri: &str, tls_pin: Option<[u8; 32]>) -> Arc<HostScope> {
    Arc::new(HostScope {
        name: "bench".to_owned(),
        uri: uri.to_owned(),
        storage_dir: "/default-pool".to_owned(),
        ports: std::ops::RangeInclusive::new(1, 0),
        vm_networks: Vec::new(),
        public_addr: None,
        name_prefix: String::new(),
        allow_hostdev: false,
        images: String::new(),
        api_credential: Default::default(),
        tls_pin,
    })
}

/// An HTTPS API on loopback with a fresh self-signed certificate that
/// answers 200; with `close`, it closes each connection after its answer.
/// Its port and the certificate's pin.
async fn https_api(close: bool) -> (u16, [u8; 32]) {
    use sha2::Digest;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let der = made.cert.der().clone();
    let pin: [u8; 32] = sha2::Sha256::digest(der.as_ref()).into();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        made.signing_key.serialize_der(),
    ));
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("pair");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_request| async move {
                    let mut answer = ::http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    ));
                    if close {
                        answer.headers_mut().insert(
                            ::http::header::CONNECTION,
                            ::http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(answer)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, pin)
}

fn engine_call(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let directory = tempfile_dir();
    let store = Arc::new(Store::open(&directory.join("bench.db")).expect("store"));
    let capabilities = Arc::new(Capabilities {
        store,
        http: Arc::new(http::HttpService::new(Default::default())),
        libvirt: Arc::new(libvirt::LibvirtService::new()),
        nat: Arc::new(nat::NatService::new(None)),
        proxy: Arc::new(proxy::ProxyService::new(None, &directory)),
    });
    let plugins = PluginRuntime::new(capabilities, directory.join("cache")).expect("runtime");
    let component = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/openidcs_plugin_libvirt.wasm");
    // An engine of the http-engine shape (the http grant's test probe):
    // its fresh-instance cost beside the libvirt engine's.
    let http_engine = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/test_component_http_probe.wasm");
    runtime.block_on(plugins.load_all(&[
        PluginConfig {
            name: "libvirt".to_owned(),
            path: component,
            grants: Grant::ALL.to_vec(),
            memory_mb: 64,
            timeout_ms: 30_000,
            description: None,
        },
        PluginConfig {
            name: "probe".to_owned(),
            path: http_engine,
            grants: vec![Grant::Http, Grant::Log],
            memory_mb: 64,
            timeout_ms: 30_000,
            description: None,
        },
    ]));
    let target = EngineTarget {
        engine: "libvirt".to_owned(),
        scope: scope(),
        config: host_config(),
    };
    let mut group = criterion.benchmark_group("engine call");
    group.bench_function("fresh instance: describe", |bencher| {
        bencher
            .to_async(&runtime)
            .iter(|| async { plugins.bench_describe(&target).await.expect("describe") })
    });
    let http_target = EngineTarget {
        engine: "probe".to_owned(),
        scope: scope(),
        config: host_config(),
    };
    group.bench_function(
        "fresh instance: describe (http engine, wasi:http linked)",
        |bencher| {
            bencher.to_async(&runtime).iter(|| async {
                plugins
                    .bench_describe(&http_target)
                    .await
                    .expect("describe")
            })
        },
    );
    for (name, close) in [
        ("http engine: one request, kept connection", false),
        ("http engine: one request, new TLS connection", true),
    ] {
        let (port, pin) = runtime.block_on(https_api(close));
        let uri = format!("https://127.0.0.1:{port}");
        let api_target = EngineTarget {
            engine: "probe".to_owned(),
            scope: api_scope(&uri, Some(pin)),
            config: openidcs::plugin::bindings::HostConfig {
                server_addr: uri.clone(),
                ..host_config()
            },
        };
        // The probe answers its report as an error: its own request must
        // have been answered 200.
        let answered = |report: String| assert!(report.contains("own=Ok((200"), "{report}");
        group.bench_function(name, |bencher| {
            bencher.to_async(&runtime).iter(|| async {
                match plugins.host_status(&api_target).await {
                    Ok(_) => panic!("the probe reports through its error"),
                    Err(error) => answered(error.to_string()),
                }
            })
        });
    }
    group.bench_function("fresh instance: vm-list (test driver)", |bencher| {
        bencher
            .to_async(&runtime)
            .iter(|| async { plugins.vm_list(&target).await.expect("vm-list") })
    });
    let (mut store, instance) = runtime
        .block_on(plugins.bench_instance("libvirt", scope()))
        .expect("instance");
    group.bench_function("warm instance: describe", |bencher| {
        bencher.iter(|| {
            runtime
                .block_on(instance.describe(&mut store))
                .expect("describe")
        })
    });
    group.finish();
}

fn host_config() -> openidcs::plugin::bindings::HostConfig {
    openidcs::plugin::bindings::HostConfig {
        name: "bench".to_owned(),
        engine: "libvirt".to_owned(),
        server_addr: "test:///default".to_owned(),
        server_user: String::new(),
        filter_name: String::new(),
        images_path: String::new(),
        system_path: "/default-pool".to_owned(),
        network_nat: String::new(),
        network_pub: String::new(),
        ports_start: 0,
        ports_close: 0,
        public_addr: Vec::new(),
        ip_pools: Vec::new(),
        extend_data: "{}".to_owned(),
    }
}

/// A scratch directory under target/ (benches leave nothing elsewhere).
fn tempfile_dir() -> std::path::PathBuf {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-scratch")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&directory).expect("scratch dir");
    directory
}

criterion_group!(benches, engine_call);
criterion_main!(benches);
