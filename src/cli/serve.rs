//! `splitmx serve`: run the gateway until SIGTERM or SIGINT; SIGHUP reloads the tables.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::GatewayConfig;
use crate::delivery::queue::{Queue, QueueContext};
use crate::delivery::{Deliverer, control};
use crate::journal::Journal;
use crate::smtp::{Server, tls};
use crate::spool::{Spool, SpoolOptions};

pub(super) fn run(config: GatewayConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("splitmx serve: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: GatewayConfig) -> ExitCode {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("splitmx serve: {what}: {e}");
        ExitCode::from(2)
    };
    let router = match super::load_router(&config) {
        Ok(r) => Arc::new(r),
        Err(code) => return code,
    };
    // Bound before anything else opens, so a taken port leaves nothing half started.
    let metrics_listener = match config.metrics.listen {
        Some(addr) => match crate::metrics::http::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => return fail("cannot listen", &e),
        },
        None => None,
    };
    let acceptor = match (&config.smtp.tls_cert, &config.smtp.tls_key) {
        (Some(cert), Some(key)) => match tls::acceptor(cert, key) {
            Ok(a) => Some(a),
            Err(e) => return fail("TLS certificate", &e),
        },
        (None, None) => None,
        _ => return fail("TLS", &"smtp.tls_cert and smtp.tls_key go together"),
    };
    let spool = match Spool::open(&config.spool, SpoolOptions::default()).await {
        Ok(s) => s,
        Err(e) => return fail("spool", &e),
    };
    let journal = if config.journal.enabled {
        let dir = crate::journal::journal_dir(&config.spool);
        match Journal::open(&dir, &config.journal) {
            Ok(j) => Some(Arc::new(j)),
            // Reports are not worth refusing mail for.
            Err(e) => {
                tracing::error!(error = %e, "journal: cannot open; running without the recipient journal");
                None
            }
        }
    } else {
        None
    };
    let server = match Server::bind(
        &config.listen,
        config.smtp.clone(),
        config.hostname.clone(),
        config.loops,
        Arc::clone(&router),
        spool.clone(),
        acceptor,
    )
    .await
    {
        Ok(s) => match &journal {
            Some(j) => s.with_journal(Arc::clone(j)),
            None => s,
        },
        Err(e) => return fail("cannot listen", &e),
    };
    let (server, queue) = if config.delivery.enabled {
        let deliverer = match Deliverer::new(&config) {
            Ok(d) => d,
            Err(e) => return fail("delivery", &e),
        };
        let queue = Queue::start(
            QueueContext {
                spool: spool.clone(),
                router: Arc::clone(&router),
                hostname: config.hostname.clone(),
                config: config.delivery.clone(),
            },
            deliverer,
        );
        if let Err(e) = control::serve(&config.spool, queue.clone()) {
            return fail("cannot open the queue control socket", &e);
        }
        let submit = queue.clone();
        (
            server.on_queued(Arc::new(move |m| submit.submit(m))),
            Some(queue),
        )
    } else {
        tracing::warn!(
            "delivery is off (delivery.enabled: false): mail is accepted and queued only"
        );
        (server, None)
    };
    let metrics_endpoint = metrics_listener.map(|listener| {
        let m = crate::metrics::metrics();
        m.set_router(&router);
        m.set_queue_probe(crate::metrics::spool_probe(spool.clone()));
        m.set_spool_totals_probe(crate::metrics::spool_totals(spool.clone()));
        if let Ok(bound) = listener.local_addr() {
            tracing::info!(listen = %bound, "metrics listening");
        }
        tokio::spawn(crate::metrics::http::serve(listener))
    });
    let flusher = journal.as_ref().map(Journal::spawn_flusher);
    let pid_file = super::pid_file(&config);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(file = %pid_file.display(), error = %e, "cannot write pid file; splitmx reload will not find the gateway");
    }
    let addrs: Vec<String> = server
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(
        listen = %addrs.join(","), hostname = %config.hostname, spool = %config.spool.display(),
        routing = %config.routing.dir().display(), version = %router.version(), "splitmx ready"
    );
    let _watcher = if config.watch {
        match router.watch(Duration::from_secs(1), Duration::from_secs(2)) {
            Ok(w) => Some(w),
            Err(e) => return fail("cannot watch the routing directory", &e),
        }
    } else {
        None
    };
    let reloader = Arc::clone(&router);
    let hup = tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; reload by SIGHUP is off");
            return;
        };
        while hup.recv().await.is_some() {
            let r = Arc::clone(&reloader);
            // Reading a large table is blocking work.
            let _ = tokio::task::spawn_blocking(move || r.reload()).await;
        }
    });
    server.run(shutdown_signal()).await;
    hup.abort();
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
    if let Some(queue) = queue {
        queue.stop(config.smtp.shutdown_grace).await;
        let _ = std::fs::remove_file(control::socket_path(&config.spool));
    }
    if let Some(journal) = &journal {
        if let Some(f) = flusher {
            f.abort();
        }
        // Every session has ended: this flush holds every message acknowledged.
        journal.flush_blocking().await;
    }
    let _ = std::fs::remove_file(&pid_file);
    match spool.close().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("spool close", &e),
    }
}

async fn shutdown_signal() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
