//! The dashboard in a real browser: Debian's Chromium driven by Playwright (PyPI) through
//! `tests/interop/dashboard_browser.py`, against a broker serving a thousand groups.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_groups_shares_and_swaps_strategies() {
    let broker = TestBroker::with(|c| {
        c.http.listen = "127.0.0.1:0".into();
        c.http.token = "browser-token".into();
    })
    .await;
    let (http_addr, token) = broker.http();
    let state = broker.state().clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..1000 {
            state
                .declare_group(&format!("idle-{i:04}"), "idle/#")
                .unwrap();
        }
    })
    .await
    .unwrap();
    let screenshot = tempfile::tempdir().unwrap();
    let path = screenshot.path().join("dashboard.png");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/dashboard_browser.py");
    let args = [
        http_addr.to_string(),
        broker.port().to_string(),
        token,
        // SHARQ_DASHBOARD_SCREENSHOT keeps the picture (docs/dashboard.png is made this way).
        std::env::var("SHARQ_DASHBOARD_SCREENSHOT").unwrap_or_else(|_| path.display().to_string()),
    ];
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new("python3");
        command.arg(script).args(&args);
        run_tool(command, Duration::from_secs(120))
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser test failed:\nstdout {}\nstderr {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if std::env::var_os("SHARQ_DASHBOARD_SCREENSHOT").is_none() {
        assert!(
            std::fs::metadata(&path).unwrap().len() > 10_000,
            "the screenshot is empty"
        );
    }
    broker.shutdown().await;
}
