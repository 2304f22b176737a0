//! Benchmark of uploads: a 200 MB file (`EDGECAM_BENCH_UPLOAD_MB`) to the local
//! S3-compatible server through the daemon, by a presigned URL and by bucket and key
//! (multipart), against `curl -T` of the same file to a presigned URL, in the same
//! run; and the daemon's peak RSS, which must not grow with the file.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn main() {
    let mb: usize = std::env::var("EDGECAM_BENCH_UPLOAD_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = test_dir("bench-upload");
        let s3 = S3Server::start(&dir.path().join("s3"));
        s3.bucket("bench");
        let media = dir.path().join("media");
        std::fs::create_dir_all(&media).unwrap();
        let file = media.join("big.bin");
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let bytes: Vec<u8> = (0..mb * 1_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&file, &bytes).unwrap();
        drop(bytes);
        let rig = Rig::new(
            "bench-upload",
            &format!(
                "[health]\nmetrics_interval = \"1s\"\n[upload]\nmedia_dir = \"{}\"\nallow_plain_http = true\n\
                 [upload.s3]\nendpoint = \"http://127.0.0.1:{}\"\nforce_path_style = true\nregion = \"{S3_REGION}\"\n",
                media.display(),
                s3.port
            ),
        )
        .await;
        let text = std::fs::read_to_string(&rig.config).unwrap();
        std::fs::write(&rig.config, text.replace("edgecam=debug,info", "info")).unwrap();
        let daemon = rig.daemon_with_s3_credentials(0);
        let pid = daemon.proc.pid();
        wait_until("the daemon online", Duration::from_secs(20), || !rig.observer.metrics().is_empty()).await;
        let rss_idle = status_kb(pid, "VmRSS:");

        // curl, the baseline.
        let (url, _) = S3Server::presigned_put(s3.port, "bench", "curl.bin").await;
        let t = Instant::now();
        let out = std::process::Command::new("curl")
            .args(["-sS", "-f", "-o", "/dev/null", "-T"])
            .arg(&file)
            .arg(&url)
            .output()
            .expect("curl runs");
        let curl = t.elapsed().as_secs_f64();
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));

        let run = |id: &'static str, body: serde_json::Value| {
            let rig = &rig;
            async move {
                let t = Instant::now();
                rig.observer
                    .publish(&format!("{CAMERA}/file/request"), body.to_string().as_bytes())
                    .await;
                wait_until(id, Duration::from_secs(600), || {
                    rig.observer.responses_for(id).iter().any(|r| r["state"] == "done" || r["state"] == "failed")
                })
                .await;
                let last = rig.observer.responses_for(id).last().unwrap().clone();
                assert_eq!(last["state"], "done", "{last}");
                t.elapsed().as_secs_f64()
            }
        };
        let (url, headers) = S3Server::presigned_put(s3.port, "bench", "put.bin").await;
        let headers: serde_json::Map<String, serde_json::Value> =
            headers.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        let put = run("bench-put", json!({"request_id": "bench-put", "file": "big.bin",
            "presigned": {"url": url, "headers": headers}}))
        .await;
        let multipart = run("bench-s3", json!({"request_id": "bench-s3", "file": "big.bin",
            "s3": {"bucket": "bench", "key": "s3.bin"}}))
        .await;
        let peak = status_kb(pid, "VmHWM:");
        let mbs = |secs: f64| mb as f64 / secs;
        println!("edgecam upload benchmark: {mb} MB file to s3s-fs on 127.0.0.1 (SigV4 checked)");
        println!("   curl -T presigned      {curl:.2} s  {:.1} MB/s (baseline)", mbs(curl));
        println!("   edgecam presigned PUT  {put:.2} s  {:.1} MB/s  {:.0} % of curl (request to done response)", mbs(put), curl / put * 100.0);
        println!("   edgecam S3 multipart   {multipart:.2} s  {:.1} MB/s  {:.0} % of curl (8 MiB parts, sequential)", mbs(multipart), curl / multipart * 100.0);
        println!("   daemon RSS             {rss_idle} KiB idle, peak {peak} KiB through both uploads");
        drop(daemon);
    });
}
