//! Assembly: open the store, load the keys, recover, attach the sim, serve HTTP(S), drain on shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;

use switchboard_engine::cluster::Membership;
use switchboard_engine::engine::{self, Engine};
use switchboard_engine::{Clock, network};
use switchboard_sqlite::SqliteStore;

use crate::api::{self, AppState};
use crate::callback::CallbackPolicy;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::graph::GraphRender;
use crate::identity::SigningKey;
use crate::metrics::Metrics;
use crate::networks::Networks;
use crate::notifier::{self, Notifier};
use crate::sim::{Sim, SimNetwork};
use switchboard_sip::network::SipNetwork;

/// How the HTTP listener is secured.
#[derive(Clone, Debug)]
pub enum Tls {
    Off,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Serve HTTPS with a self-signed certificate for localhost and 127.0.0.1, kept in the data folder.
    Generate,
}

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    /// This node's name (`--node-id`, or host name and port).
    pub node_id: String,
    /// Where the other nodes reach this one, when it shares a PostgreSQL database with them.
    pub cluster_address: Option<String>,
    /// Where SIP is served, and its domain.
    pub sip: Option<(SocketAddr, String)>,
    /// Where SIP over TLS is served, if it is.
    pub sip_tls: Option<SocketAddr>,
    pub base_url: String,
    pub state: AppState,
    pub recovered_calls: usize,
    pub recovered_notifications: usize,
    pub cert_path: Option<PathBuf>,
}

pub async fn start(
    config: Config,
    tls: Tls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Running, tokio::task::JoinHandle<()>)> {
    // One crypto provider for rustls (server and webhook client): ring, no C toolchain needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    private_dir(&config.data_dir).with_context(|| format!("cannot create the data folder {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if matches!(tls, Tls::Off) { "http" } else { "https" };
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    let host = if addr.is_ipv6() && !host.starts_with('[') { format!("[{host}]") } else { host };
    let base_url =
        config.public_url.clone().unwrap_or_else(|| format!("{scheme}://{host}:{}", addr.port())).trim_end_matches('/').to_owned();

    let node_id = config.node_id.clone().unwrap_or_else(|| format!("{}:{}", host_name(), addr.port()));
    let _ = NODE_ID.set(node_id.clone());
    tracing::info!(node_id, "starting");
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    metrics.set_node(&node_id);
    // One clock for everything: the wall clock, or virtual time that only `POST /sim/v1/clock` moves.
    let clock = if config.sim.virtual_clock { Clock::virtual_now() } else { Clock::system() };
    let directory = Arc::new(config.directory.clone());
    // On PostgreSQL this node is one of possibly several: it owns the calls it creates, under a lease.
    let (store, membership): (Arc<dyn crate::store::Store>, Option<Arc<dyn Membership>>) = match &config.store {
        Some(url) => {
            let pg = switchboard_postgres::open(url, &node_id).await?;
            (Arc::clone(&pg) as Arc<dyn crate::store::Store>, Some(pg as Arc<dyn Membership>))
        }
        None => (Arc::new(SqliteStore::open(&config.data_dir)?), None),
    };
    // Nodes sharing a database share its signing keys, so that every node's tokens verify on every
    // node. Access tokens and notification tokens have a key each.
    let key = Arc::new(match &membership {
        Some(m) => SigningKey::from_pem(&m.shared(SIGNING_KEY, &new_signing_key).await?)?,
        None => SigningKey::load_or_generate(&config.data_dir.join("keys"))?,
    });
    let notification_key = Arc::new(match &membership {
        Some(m) => SigningKey::from_pem(&m.shared(NOTIFICATION_KEY, &new_signing_key).await?)?,
        None => SigningKey::load_or_generate_notification(&config.data_dir.join("keys"))?,
    });
    // Never a callback: this server's own addresses (its Graph and sim APIs, its SIP ports).
    let own = [Some(addr), config.sip.listen, config.sip.tls_listen].into_iter().flatten().filter(|a| a.port() != 0);
    let callbacks =
        Arc::new(CallbackPolicy::new(&config.callbacks).map_err(|(field, problem)| anyhow::anyhow!("{field}: {problem}"))?.with_own(own));
    // Each call's story, told by the engine, the notifier and the API (`/sim/v1/calls/{id}/history`).
    let history = Arc::new(switchboard_engine::history::History::new(config.sim.history_calls, config.sim.history_max_age_ms));
    let notifier = Notifier::new(notifier::Parts {
        callbacks: Arc::clone(&callbacks),
        store: Arc::clone(&store),
        key: Arc::clone(&notification_key),
        settings: config.notifications.clone(),
        metrics: Arc::clone(&metrics),
        clock: clock.clone(),
        directory: Arc::clone(&directory),
        history: Arc::clone(&history),
    })?;
    let engine = Engine::new(engine::Parts {
        store: Arc::clone(&store),
        clock: clock.clone(),
        render: Arc::new(GraphRender { directory: Arc::clone(&directory), base_url: base_url.clone() }),
        outbox: Arc::clone(&notifier) as Arc<dyn engine::OutboxSink>,
        metrics: Arc::clone(&metrics),
        history: Arc::clone(&history),
    });
    // Nodes sharing a database share a key: nodes prove themselves with it, SIP nonces are made with it.
    let cluster_key = match &membership {
        Some(m) => Some(m.shared(CLUSTER_KEY, &|| format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())).await?),
        None => None,
    };
    let (events, events_rx) = network::channel();
    let sim = Sim::new(Arc::clone(&directory), config.sim.behaviours.clone(), clock.clone(), events.clone());
    // Recordings the sim makes (`recordResponse`), served at `/recordings/{id}`.
    let recordings = switchboard_engine::recordings::Recordings::new();
    sim.set_recordings(Arc::clone(&recordings));
    sim.set_history(Arc::clone(&history));
    let (sip, sip_network, sip_tls) = match config.sip.listen {
        Some(listen) => {
            let (bound, domain, network) =
                start_sip(&config, listen, &clock, &metrics, cluster_key.as_deref(), events.clone(), &directory).await?;
            let tls = match config.sip.tls_listen {
                Some(at) => Some(start_sip_tls(&config, at, network.shared.clone()).await?),
                None => None,
            };
            (Some((bound, domain)), Some(network), tls)
        }
        None => (None, None, None),
    };
    if let Some(sip) = &sip_network {
        // Sim calls transferred to SIP phones: the sim connects its transferee, and each side hears
        // when the other hangs up.
        sip.set_hand_over(Arc::new(crate::networks::SimHandOver(Arc::clone(&sim))));
        let sip = Arc::downgrade(sip);
        sim.on_external(Box::new(move |id, event| {
            use switchboard_sim::ExternalEvent;
            use switchboard_sip::network::OtherSide;
            if let Some(sip) = sip.upgrade() {
                let event = match event {
                    ExternalEvent::Answered => OtherSide::Answered,
                    ExternalEvent::Refused(f) => OtherSide::Refused(f),
                    ExternalEvent::HungUp => OtherSide::HungUp,
                };
                sip.other_side(id, event);
            }
        }));
    }
    // An app at its `max_concurrent_calls` is offered no more calls, whichever network they come from.
    let admission: switchboard_engine::network::Admission = {
        let (engine, directory) = (Arc::downgrade(&engine), Arc::clone(&directory));
        Arc::new(move |app_id: &str| {
            let max = directory.app(app_id).and_then(|a| a.max_concurrent_calls);
            match (max, engine.upgrade()) {
                (Some(max), Some(engine)) => engine.live_calls_of(app_id) < max as usize,
                _ => true,
            }
        })
    };
    sim.set_admission(Arc::clone(&admission));
    if let Some(sip) = &sip_network {
        sip.set_admission(admission);
        // Prompts for phones: files in the data folder's prompts/, or URLs under the callback policy.
        sip.set_prompts(Arc::new(crate::prompts::PromptLoader::new(Arc::clone(&callbacks), &config.data_dir)?));
        sip.set_recordings(Arc::clone(&recordings));
    }
    engine.attach_network(Arc::new(Networks { sim: SimNetwork(Arc::clone(&sim)), sip: sip_network.clone(), events }), events_rx);
    let cluster = match membership {
        Some(m) => {
            let address = config.node_url.clone().unwrap_or_else(|| format!("{scheme}://{host}:{}", addr.port()));
            let address = address.trim_end_matches('/').to_owned();
            // Taken before any call is recovered, so that no other node adopts them meanwhile.
            m.join(&address).await?;
            let cluster_key = cluster_key.clone().unwrap_or_default();
            let metrics = Arc::clone(&metrics);
            Some(Cluster::new(m, address, cluster_key, Arc::clone(&engine), Arc::clone(&notifier), metrics)?)
        }
        None => None,
    };
    let recovered_calls = engine.recover().await?;
    let recovered_notifications = notifier.recover().await?;
    tokio::spawn(Arc::clone(&notifier).run());
    if let Some(c) = &cluster {
        tokio::spawn(Arc::clone(c).run());
    }

    let ready = Arc::new(AtomicBool::new(true));
    let state = AppState {
        config: Arc::clone(&config),
        engine,
        sim,
        notifier: Arc::clone(&notifier),
        store,
        key,
        metrics,
        base_url: base_url.clone(),
        ready: Arc::clone(&ready),
        verified: Arc::default(),
        cluster: cluster.clone(),
        sip: sip_network,
        callbacks,
        notification_key,
        rate_limits: Arc::default(),
        recordings,
        console: Arc::default(),
    };
    let cluster_address = cluster.as_ref().map(|c| c.address.clone());
    let app = api::router(state.clone());
    let mut cert_path = None;
    let acceptor = match tls {
        Tls::Off => None,
        tls => {
            let (cert, key) = match tls {
                Tls::Files { cert, key } => (cert, key),
                _ => generate_cert(&config.data_dir.join("tls"))?,
            };
            cert_path = Some(cert.clone());
            Some(tls_acceptor(&cert, &key, &[b"http/1.1"])?)
        }
    };
    let (limits, metrics) = (config.http.clone(), Arc::clone(&state.metrics));
    let handle = tokio::spawn(async move {
        let shutdown = async move {
            shutdown.await;
            ready.store(false, Ordering::SeqCst);
        };
        crate::front::serve(listener, acceptor, app, limits, metrics, shutdown).await;
        notifier.shutdown();
        if let Some(c) = cluster {
            c.leave().await;
        }
    });
    Ok((
        Running { addr, node_id, cluster_address, sip, sip_tls, base_url, state, recovered_calls, recovered_notifications, cert_path },
        handle,
    ))
}

/// Creates the data folder readable by its owner only (0700): it holds the keys and the calls. An
/// existing one is tightened when it is ours (empty, or holding our database).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let ours = dir.join("switchboard.db").exists() || std::fs::read_dir(dir)?.next().is_none();
        if ours && std::fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

static NODE_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// This process's node name, once a server has started (every log line carries it).
pub fn node_id() -> Option<&'static str> {
    NODE_ID.get().map(String::as_str)
}

/// Serves SIP on `listen` (UDP and TCP): the registrar for the directory's users, on the engine's clock.
async fn start_sip(
    config: &Config,
    listen: SocketAddr,
    clock: &Clock,
    metrics: &Arc<Metrics>,
    shared_secret: Option<&str>,
    events: network::NetworkEvents,
    directory: &Arc<crate::config::Directory>,
) -> anyhow::Result<(SocketAddr, String, Arc<SipNetwork>)> {
    let host = listen.ip().to_string();
    let domain =
        config.sip.domain.clone().unwrap_or_else(|| if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { host.clone() });
    let accounts = config
        .sip
        .accounts
        .iter()
        .map(|(_, a)| switchboard_sip::Account { username: a.username.clone(), password: a.password.clone() })
        .collect();
    let trunks: Vec<switchboard_sip::network::Trunk> = config
        .sip
        .trunks
        .iter()
        .map(|t| {
            let address = t.socket_addr().map_err(|p| anyhow::anyhow!("sip.trunks: {p}"))?;
            Ok(switchboard_sip::network::Trunk {
                name: t.name.clone().unwrap_or_else(|| t.address.clone()),
                address,
                prefixes: t.numbers.clone(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let nonce_secret = shared_secret.map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let endpoint = switchboard_sip::Endpoint::new(switchboard_sip::Settings {
        domain: domain.clone(),
        aliases: vec![host, "127.0.0.1".to_owned(), "localhost".to_owned()],
        accounts,
        nonce_secret,
        trunks: trunks.iter().map(|t| t.address).collect(),
        hold_before_refer: config.sip.hold_before_refer,
        bridge_when_refer_refused: config.sip.bridge_when_refer_refused,
        blind_when_replaces_refused: config.sip.blind_when_replaces_refused,
        comfort_audio: config.sip.comfort_audio.into(),
    });
    let shared = switchboard_sip::transport::Shared::new(endpoint, clock.clone(), Arc::clone(metrics));
    // Our media address in SDPs: comfort audio goes out of it, and the phones' RTP is counted there.
    let media = tokio::net::UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).await.context("cannot bind a socket for RTP")?;
    let media_addr = media.local_addr()?;
    switchboard_sip::transport::serve_media(media, shared.clone());
    let routing = switchboard_sip::network::Routing {
        users: config.sip.accounts.iter().map(|(id, a)| (a.username.clone(), id.clone())).collect(),
        trunks,
        trunk_sim_numbers: config.sip.trunk_sim_numbers,
    };
    // Phones must be told a real address (Contact, SDP `c=`): with a wildcard listen address, the
    // domain if it is an address, else loopback.
    let advertised = if listen.ip().is_unspecified() {
        let ip = domain.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        tracing::warn!(%listen, %ip, "SIP listens on a wildcard address; phones are told {ip} (set [sip] domain to an address they reach)");
        ip
    } else {
        listen.ip()
    };
    let media_addr = SocketAddr::new(advertised, media_addr.port());
    let network = SipNetwork::new(shared.clone(), events, Arc::clone(directory), routing, media_addr);
    let bound = switchboard_sip::transport::serve(listen, shared.clone()).await.with_context(|| format!("cannot serve SIP on {listen}"))?;
    shared.endpoint.lock().unwrap_or_else(|e| e.into_inner()).set_local(SocketAddr::new(advertised, bound.port()));
    tracing::info!(%bound, domain, "SIP served over UDP and TCP");
    Ok((bound, domain, network))
}

/// Serves SIP over TLS on `at` with `[sip]`'s certificate, else `[tls]`'s, else the generated one.
async fn start_sip_tls(config: &Config, at: SocketAddr, shared: switchboard_sip::transport::Shared) -> anyhow::Result<SocketAddr> {
    let (cert, key) = match (&config.sip.tls_cert, &config.sip.tls_key, config.tls.as_ref().map(|t| (&t.cert, &t.key))) {
        (Some(c), Some(k), _) => (c.clone(), k.clone()),
        (_, _, Some((Some(c), Some(k)))) => (c.clone(), k.clone()),
        _ => generate_cert(&config.data_dir.join("tls"))?,
    };
    let acceptor = tls_acceptor(&cert, &key, &[])?;
    let listener = TcpListener::bind(at).await.with_context(|| format!("cannot serve SIP over TLS on {at}"))?;
    let bound = listener.local_addr()?;
    switchboard_sip::transport::serve_tls(listener, shared, move |stream| acceptor.accept(stream));
    tracing::info!(%bound, cert = %cert.display(), "SIP served over TLS");
    Ok(bound)
}

/// The names under which nodes share values in the database.
const SIGNING_KEY: &str = "signing-key";
const NOTIFICATION_KEY: &str = "notification-key";
const CLUSTER_KEY: &str = "cluster-key";

fn new_signing_key() -> String {
    SigningKey::generate_pem().unwrap_or_else(|e| {
        // Stored as is, it would be refused by name by every node; say why here too.
        tracing::error!(error = %e, "could not generate a signing key");
        String::new()
    })
}

/// This machine's name, as the kernel knows it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A self-signed certificate for localhost and 127.0.0.1, made once and kept.
fn generate_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir)?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).context("cannot generate a TLS certificate")?;
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    Ok((cert, key))
}

fn tls_acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}: not a PEM private key", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
