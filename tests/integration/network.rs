//! The S3 boundary under network trouble: a lost CreateMultipartUpload reply leaves no second
//! upload behind; a wrong or silent endpoint ends in one readable line, in bounded time.

use std::sync::atomic::Ordering;

use crate::proxy::{Plan, Proxy};
use crate::support::*;

#[test]
fn a_lost_create_reply_leaves_exactly_one_upload_and_none_open() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let path = random_file(dir.path(), "f", 12 * MIB, 7);
        let key = format!("network/lost-create-{}", std::process::id());
        let proxy = Proxy::start(&s.endpoint, Plan::default());
        proxy.drop_next_create_reply();
        let out = s.tally([
            "upload",
            path.to_str().unwrap(),
            &s.url(&key),
            "--endpoint-url",
            &proxy.url,
            "--part-size",
            "5MiB",
            "--quiet",
        ]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(
            proxy.stats.faults.load(Ordering::SeqCst),
            1,
            "{name}: the Create reply was dropped"
        );
        assert_eq!(
            proxy.stats.creates.load(Ordering::SeqCst),
            1,
            "{name}: the upload the lost reply created was adopted, not created again"
        );
        assert_eq!(s.uploads_in_progress(&key), 0, "{name}: nothing left open");
        assert_eq!(
            s.download_sha256(&key),
            file_sha256(&path),
            "{name}: the object is the file"
        );
    }
}
