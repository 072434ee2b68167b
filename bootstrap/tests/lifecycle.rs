//! `up` against real processes: refusing taken ports, and restarting a
//! component that died.

use std::time::Duration;

use ossature_bootstrap::Layout;
use ossature_bootstrap::components::{CADDY_ADMIN_PORT, Component};
use ossature_bootstrap::stack::{self, State};

// Both tests drive the one real stack; one must not restart what the other killed.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn state_of(rows: &[stack::Row], c: Component) -> State {
    rows.iter()
        .find(|r| r.component == c)
        .expect("every component has a row")
        .state
        .clone()
}

#[tokio::test]
async fn up_refuses_taken_ports_before_starting_anything() {
    let _serial = SERIAL.lock().await;
    // The running stack holds every port; a second state directory must not start.
    ossature_bootstrap::ensure_up().await.unwrap();
    let real = Layout::from_env().unwrap();
    let scratch = Layout {
        cache: real.cache.clone(),
        state: std::env::temp_dir().join(format!("ossature-ports-{}", std::process::id())),
    };
    let error = stack::up(&scratch).await.unwrap_err().to_string();
    assert!(error.starts_with("nothing was started"), "{error}");
    assert!(
        error.contains(&format!(
            "port {CADDY_ADMIN_PORT} (for caddy) is held by pid "
        )),
        "{error}"
    );
    let pidfiles = std::fs::read_dir(scratch.state.join("run"))
        .unwrap()
        .count();
    assert_eq!(pidfiles, 0, "no component was started");
    std::fs::remove_dir_all(&scratch.state).unwrap();
}

#[tokio::test]
async fn a_component_that_dies_is_reported_and_started_again() {
    let _serial = SERIAL.lock().await;
    ossature_bootstrap::ensure_up().await.unwrap();
    let layout = Layout::from_env().unwrap();
    let victim = Component::Challtestsrv;
    let pidfile = std::fs::read_to_string(layout.pidfile(victim.name())).unwrap();
    let pid: i32 = pidfile.split_whitespace().next().unwrap().parse().unwrap();
    // Kill its whole process group the hard way.
    let status = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rows = stack::status(&layout).await;
    assert_eq!(state_of(&rows, victim), State::Died);

    ossature_bootstrap::ensure_up().await.unwrap();
    let rows = stack::status(&layout).await;
    assert_eq!(state_of(&rows, victim), State::Ready);
    let row = rows.iter().find(|r| r.component == victim).unwrap();
    assert_ne!(row.pid, Some(pid), "a new process serves");
}
