//! Leader election when the leader's API server stops answering (a network partition: requests hang), on
//! the stack's kube-apiserver through a proxy the test cuts. Why `src/controller/leader.rs` is kept
//! rather than the maintained `kube-lease-manager` crate (the README's "Where we keep our own code"): ours
//! stops leading before the Lease expires and another replica takes it; the crate's leader keeps
//! reporting that it leads after another replica took the Lease, so two would reconcile at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kappa_operator::controller::leader::LeaderElector;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const LEASE_SECONDS: u64 = 4;

/// A TCP proxy to the stack's kube-apiserver; once `cut`, it forwards nothing more and answers nothing
/// (connections stay open: requests hang, as in a partition).
struct Partition {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Partition {
    async fn start(upstream: String) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let cut = flag.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let hang = async {
                        while !cut.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = hang => tokio::time::sleep(Duration::from_secs(3600)).await,
                    }
                });
            }
        });
        Partition { port, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// A client for the stack's API server through this proxy.
    async fn client(&self) -> kube::Client {
        common::stack_var("KUBECONFIG");
        let mut config = kube::Config::infer().await.unwrap();
        config.cluster_url = format!("https://127.0.0.1:{}", self.port).parse().unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

/// host:port of the stack's API server.
async fn api_server() -> String {
    let config = kube::Config::infer().await.unwrap();
    let url = config.cluster_url;
    format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap_or(443))
}

#[tokio::test]
async fn our_leader_stops_before_its_lease_expires_when_the_api_server_stops_answering() {
    let (client, ns) = common::setup("leader-ours").await;
    let partition = Partition::start(api_server().await).await;
    let duration = Duration::from_secs(LEASE_SECONDS);
    let a = LeaderElector::new(partition.client().await, &ns, "lease", "a", duration);
    let b = LeaderElector::new(client.clone(), &ns, "lease", "b", duration);
    let acquired = a.acquire().await;
    partition.cut();
    let a_leads = tokio::spawn(async move {
        a.hold(acquired).await;
        Instant::now()
    });
    let b_took_over = b.acquire().await;
    let a_stopped = tokio::time::timeout(duration, a_leads)
        .await
        .expect("the cut-off leader never stopped leading")
        .unwrap();
    assert!(
        a_stopped < b_took_over,
        "the cut-off leader stopped {:?} after another took over",
        a_stopped - b_took_over
    );
    assert!(
        a_stopped - acquired < duration,
        "the cut-off leader stopped {:?} after its last renewal: its Lease had expired",
        a_stopped - acquired
    );
    common::delete_namespace(&client, &ns).await;
}

/// When this fails, `kube-lease-manager` stops leading on a partition: `src/controller/leader.rs` can be
/// replaced by it (and the README's "Where we keep our own code" updated).
#[tokio::test]
async fn kube_lease_manager_still_reports_leading_after_another_took_its_lease() {
    let (client, ns) = common::setup("leader-crate").await;
    let partition = Partition::start(api_server().await).await;
    let manager = kube_lease_manager::LeaseManagerBuilder::new(partition.client().await, "lease")
        .with_namespace(&ns)
        .with_identity("crate-a")
        .with_duration(LEASE_SECONDS)
        .with_grace(1)
        .build()
        .await
        .unwrap();
    let (mut leading, _task) = manager.watch().await;
    tokio::time::timeout(Duration::from_secs(30), leading.wait_for(|l| *l))
        .await
        .expect("the crate's manager never led")
        .unwrap();
    partition.cut();
    let b = LeaderElector::new(
        client.clone(),
        &ns,
        "lease",
        "b",
        Duration::from_secs(LEASE_SECONDS),
    );
    tokio::time::timeout(Duration::from_secs(4 * LEASE_SECONDS), b.acquire())
        .await
        .expect("another replica takes the expired Lease");
    // Another replica leads; give the crate's manager a whole lease duration more to notice.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS)).await;
    assert!(
        *leading.borrow(),
        "kube-lease-manager now stops leading when it cannot renew: replace src/controller/leader.rs with it"
    );
    common::delete_namespace(&client, &ns).await;
}
