//! Root integration tests: which control group (service, container, pod)
//! runs a connection's owner. Real cgroups under the real cgroup2 mount
//! (wherever /proc/self/mountinfo says it is), real traffic from peers
//! moved into them, exact bytes.
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cgroup::Groups;
use common::{NetNs, Tcptop, closed, of_conn, u};

/// A server in a systemd service's group, a client in a Kubernetes pod's
/// container group (systemd cgroup driver): every record of each side
/// names its group, unit, container and pod, live and closed, and the
/// bytes are exact; `--cgroup` keeps only the pod's connections.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn services_containers_and_pods() {
    common::require_root();
    let _g = common::serial();
    let uid = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
    let hex = "3f2a8c9d0e1b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d";
    let svc = "/system.slice/tcptop-test.service".to_string();
    let pod_group = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{hex}.scope",
        uid.replace('-', "_")
    );
    let mut groups = Groups::new();
    let svc_procs = groups.make(&svc);
    let pod_procs = groups.make(&pod_group);
    // The kubelet's record of the pod's namespace and name.
    let pods = PathBuf::from("/var/log/pods");
    let made_pods = !pods.exists();
    std::fs::create_dir_all(&pods).unwrap();
    let pod_dir = pods.join(format!("shop_cart-7d4b9c_{uid}"));
    std::fs::create_dir(&pod_dir).unwrap();
    groups.pod_dir = Some(pod_dir);

    let ns = NetNs::new("cgroups");
    let addr = "127.0.0.1:40401";
    let mut all = Tcptop::start(&["--port", "40401"]);
    let mut only_pod = Tcptop::start(&["--port", "40401", "--cgroup", "/kubepods.slice"]);
    let mut srv = ns.peer_in_cgroup(
        &svc_procs,
        &[
            "server", "--listen", addr, "--recv", "3333", "--send", "4444", "--conns", "2",
        ],
    );
    srv.expect("listening");
    let mut cli = ns.peer_in_cgroup(
        &pod_procs,
        &[
            "client",
            "--connect",
            addr,
            "--send",
            "3333",
            "--recv",
            "4444",
            "--wait-stdin",
        ],
    );
    let local = cli.local_at("connected");
    cli.poke();
    cli.expect("done");
    srv.expect("done");
    // Live, idle: both ends named and exact.
    let live_cli = all.wait_for(|r| {
        r["local"] == local.as_str() && r["tx_bytes"].as_u64() == Some(3333) && !r["pod"].is_null()
    });
    assert_eq!(live_cli["cgroup"], pod_group.as_str(), "{live_cli}");
    let live_srv = all
        .wait_for(|r| r["local"] == addr && r["remote"] == local.as_str() && !r["unit"].is_null());
    assert_eq!(live_srv["cgroup"], svc.as_str(), "{live_srv}");
    cli.poke();
    cli.wait_ok();
    // A short one whose process is gone before the next snapshot: its
    // group can only come from what the kernel recorded.
    let mut quick = ns.peer_in_cgroup(
        &pod_procs,
        &[
            "client",
            "--connect",
            addr,
            "--send",
            "3333",
            "--recv",
            "4444",
        ],
    );
    let quick_local = quick.local_at("done");
    quick.wait_ok();
    srv.wait_ok();
    all.pump(Duration::from_millis(800));
    only_pod.pump(Duration::from_millis(300));
    let (records, _) = all.stop();
    let (pod_only, _) = only_pod.stop();

    for r in of_conn(&records, &local, addr) {
        // connect() names the owner, and so its group, from the start.
        assert_ne!(r["pid"], 0, "{r}");
        assert_eq!(r["cgroup"], pod_group.as_str(), "{r}");
        assert_eq!(
            r["unit"],
            format!("cri-containerd-{hex}.scope").as_str(),
            "{r}"
        );
        assert_eq!(r["container"], &hex[..12], "{r}");
        assert_eq!(r["pod"], "shop/cart-7d4b9c", "{r}");
    }
    let fin = closed(&of_conn(&records, &local, addr));
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (3333, 4444));
    // (A listener's child has no owner, and so no group, until the server
    // makes a call on it.)
    for r in of_conn(&records, addr, &local)
        .into_iter()
        .filter(|r| r["pid"] != 0)
    {
        assert_eq!(r["cgroup"], svc.as_str(), "{r}");
        assert_eq!(r["unit"], "tcptop-test.service", "{r}");
        assert!(r["container"].is_null() && r["pod"].is_null(), "{r}");
    }
    let fin = closed(&of_conn(&records, addr, &local));
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (4444, 3333));

    let q = of_conn(&records, &quick_local, addr);
    let fin = q
        .iter()
        .find(|r| r["state"] == "CLOSED")
        .expect("closed quick client");
    assert_eq!(fin["pod"], "shop/cart-7d4b9c", "{fin}");
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (3333, 4444));

    // --cgroup: the pod's side only.
    assert!(!pod_only.is_empty());
    assert!(
        pod_only
            .iter()
            .all(|r| r["local"] == local.as_str() || r["local"] == quick_local.as_str()),
        "{pod_only:#?}"
    );
    drop(groups);
    if made_pods {
        let _ = std::fs::remove_dir(&pods);
    }
}

/// A connection opened before tcptop started and idle since (on Linux
/// 6.1+ it has no kernel record: the start-up walk reports it once) names
/// its holder's group, unit and container from the first snapshot, and
/// its bytes after that are exact.
#[test]
#[cfg_attr(not(tcptop_root), ignore = "needs root")]
fn idle_connection_open_before_start_names_its_group() {
    common::require_root();
    let _g = common::serial();
    let hex = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
    let group = format!("/system.slice/docker-{hex}.scope");
    let mut groups = Groups::new();
    let procs = groups.make(&group);
    let ns = NetNs::new("cgidle");
    let addr = "127.0.0.1:40402";
    let mut srv = ns.peer(&[
        "server",
        "--listen",
        addr,
        "--recv",
        "1500",
        "--send",
        "2500",
        "--wait-stdin",
    ]);
    srv.expect("listening");
    let mut cli = ns.peer_in_cgroup(
        &procs,
        &[
            "client",
            "--connect",
            addr,
            "--send",
            "1500",
            "--recv",
            "2500",
            "--wait-stdin",
        ],
    );
    let local = cli.local_at("connected");
    srv.expect("accepted");
    let mut top = Tcptop::start(&["--port", "40402"]);
    // Its first record, before it does anything.
    let first = top.wait_for(|r| r["local"] == local.as_str());
    assert_eq!(first["cgroup"], group.as_str(), "{first}");
    assert_eq!(first["container"], &hex[..12], "{first}");
    assert_eq!(u(&first, "tx_bytes"), 0, "{first}");
    srv.poke();
    cli.poke();
    cli.expect("done");
    cli.poke();
    cli.wait_ok();
    srv.wait_ok();
    top.pump(Duration::from_millis(800));
    let (records, _) = top.stop();
    let fin = closed(&of_conn(&records, &local, addr));
    assert_eq!((u(fin, "tx_bytes"), u(fin, "rx_bytes")), (1500, 2500));
    assert_eq!(fin["cgroup"], group.as_str(), "{fin}");
    drop(groups);
}
