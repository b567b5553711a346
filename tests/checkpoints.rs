//! The backfill checkpoint on the real API server at AWS's scale (issue #14 item 3): an export of 20,000
//! data files with long keys, recorded by two workers of an Indexed Job at once, stays a few KB in its
//! ConfigMap (at most 1 MiB) and reads back exactly.

mod common;

use kappa_operator::backfill::worker::FileCheckpoints;
use kappa_operator::runtime::checkpoints::ConfigMapCheckpoint;

#[tokio::test]
async fn twenty_thousand_files_fit_one_configmap_and_two_shares_never_overwrite_each_other() {
    let (client, ns) = common::setup("ckpt-20k").await;
    let prefix = "team-analytics/exports/very-long-prefix-chosen-by-a-platform-team/2026/11/30";
    let files: Vec<String> = (0..20_000)
        .map(|i| {
            format!("{prefix}/AWSDynamoDB/01764460800000-1a2b3c4d/data/{i:05}-ab12cd34ef56gh78ij90kl.json.gz")
        })
        .collect();
    let name = "view-backfill-1".to_string();
    let shares: Vec<ConfigMapCheckpoint> = (0..2)
        .map(|share| {
            let c = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
            c.layout(&files, (share, 2));
            c
        })
        .collect();
    // Each share marks its files (position % 2 == share) among the first 600, concurrently.
    let marks = shares.iter().enumerate().map(|(share, c)| {
        let files = &files;
        async move {
            for f in files.iter().take(600).skip(share).step_by(2) {
                c.mark_done(f, 10).await.unwrap();
            }
        }
    });
    futures::future::join_all(marks).await;

    // A fresh reader (a restarted operator) sees every file either share recorded.
    let reader = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
    reader.layout(&files, (0, 1));
    let done = reader.done().await.unwrap();
    assert_eq!(done.len(), 600);
    assert!(files.iter().take(600).all(|f| done.contains(f)));

    // The worst case for the encoding: a pseudo-random half of the 20,000 files done, as a share's key
    // written whole through the API server, read back by a restarted reader.
    let mut bits = vec![0u8; 20_000 / 8];
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut expected = std::collections::BTreeSet::new();
    for (i, f) in files.iter().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x & 1 == 1 {
            bits[i / 8] |= 1 << (i % 8);
            expected.insert(f.clone());
        }
    }
    let encoded = kappa_operator::runtime::checkpoints::encode_bits(&bits);
    let full = ConfigMapCheckpoint::new(client.clone(), &ns, "half-backfill-1".into(), None);
    let key = kappa_operator::runtime::checkpoints::files_key(&files, (0, 1));
    full.merge([(key, encoded.clone())].into()).await.unwrap();
    full.layout(&files, (0, 1));
    assert_eq!(full.done().await.unwrap(), expected);
    let all_done = kappa_operator::runtime::checkpoints::encode_bits(&vec![0xFF; 20_000 / 8]);
    let listed: usize = files.iter().map(String::len).sum();
    println!(
        "checkpoint of 20,000 files: {} bytes with a random half done, {} bytes with all done (the file keys alone: {listed} bytes)",
        encoded.len(),
        all_done.len()
    );
    assert!(encoded.len() < 4_000, "{} bytes", encoded.len());

    // How far into a file a share is survives a restart, and is forgotten once the file is done.
    let share = ConfigMapCheckpoint::new(client.clone(), &ns, "lines-backfill-1".into(), None);
    share.layout(&files, (1, 2));
    share.done().await.unwrap();
    share.save_lines_done(&files[19_999], 50_000).await.unwrap();
    share.save_lines_done(&files[7], 100_000).await.unwrap();
    let restarted = ConfigMapCheckpoint::new(client.clone(), &ns, "lines-backfill-1".into(), None);
    restarted.layout(&files, (1, 2));
    let begun = restarted.lines_done().await.unwrap();
    assert_eq!(begun.get(&files[19_999]), Some(&50_000));
    assert_eq!(begun.get(&files[7]), Some(&100_000));
    restarted.mark_done(&files[7], 1).await.unwrap();
    restarted.save_lines_done(&files[19_999], 100_000).await.unwrap();
    let again = ConfigMapCheckpoint::new(client.clone(), &ns, "lines-backfill-1".into(), None);
    again.layout(&files, (1, 2));
    let begun = again.lines_done().await.unwrap();
    assert_eq!(begun.len(), 1, "the done file is forgotten: {begun:?}");
    assert_eq!(begun.get(&files[19_999]), Some(&100_000));
    common::delete_namespace(&client, &ns).await;
}

/// Found by the #14 breaker: a bitmap records files by position, so a checkpoint of another list of files
/// (an earlier export left under the same ConfigMap name) must not mark this export's files done; and two
/// processes of one share (a Job pod restarted while the old one still runs) must not erase each other's
/// files.
#[tokio::test]
async fn positions_of_another_export_are_not_this_ones_and_two_writers_of_one_share_add_up() {
    let (client, ns) = common::setup("ckpt-other").await;
    let old: Vec<String> = (0..10)
        .map(|i| format!("old/AWSDynamoDB/e1/data/{i}.json.gz"))
        .collect();
    let new: Vec<String> = (0..10)
        .map(|i| format!("new/AWSDynamoDB/e2/data/{i}.json.gz"))
        .collect();
    let name = "v-backfill-1".to_string();
    let earlier = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
    earlier.layout(&old, (0, 1));
    earlier.done().await.unwrap();
    for f in &old {
        earlier.mark_done(f, 1).await.unwrap();
    }
    let now = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
    now.layout(&new, (0, 1));
    assert!(
        now.done().await.unwrap().is_empty(),
        "another export's positions count for nothing"
    );

    // Two writers of share (0, 1), each unaware of the other's files.
    let a = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
    let b = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
    a.layout(&new, (0, 1));
    b.layout(&new, (0, 1));
    a.done().await.unwrap();
    b.done().await.unwrap();
    let (ra, rb) = futures::join!(
        async {
            for f in new.iter().step_by(2) {
                a.mark_done(f, 1).await.unwrap();
            }
        },
        async {
            for f in new.iter().skip(1).step_by(2) {
                b.mark_done(f, 1).await.unwrap();
            }
        }
    );
    let _ = (ra, rb);
    let reader = ConfigMapCheckpoint::new(client.clone(), &ns, name, None);
    reader.layout(&new, (0, 1));
    assert_eq!(
        reader.done().await.unwrap().len(),
        10,
        "both writers' files are recorded"
    );
    common::delete_namespace(&client, &ns).await;
}
