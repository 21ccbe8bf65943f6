//! Self-tests of `gloo_testing::procs`: the test binary re-executes itself as ranks.

use gloo_testing::deadline;
use gloo_testing::procs::{self, Board};
use std::time::Duration;

#[test]
fn two_children_exchange_through_the_board() {
    if let Some((rank, size)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        board.put(rank, format!("hello from {rank}").as_bytes()).unwrap();
        let all = board.get_all(size, deadline(30)).unwrap();
        for (r, v) in all.iter().enumerate() {
            assert_eq!(v, format!("hello from {r}").as_bytes());
        }
        println!("rank {rank} of {size} saw {} entries", all.len());
        return;
    }
    let board = Board::fresh("selftest").unwrap();
    let group = procs::spawn_self("two_children_exchange_through_the_board", 2, &[board.env()]);
    let outcomes = group.wait_success(deadline(60));
    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        assert!(
            o.stdout.contains(&format!("rank {} of 2 saw 2 entries", o.rank)),
            "{}",
            o.report("ran")
        );
    }
}

#[test]
fn a_failing_child_is_reported_with_its_output() {
    if let Some((rank, _)) = procs::child_rank() {
        assert_ne!(rank, 1, "rank 1 fails on purpose");
        return;
    }
    let outcomes =
        procs::spawn_self("a_failing_child_is_reported_with_its_output", 2, &[]).wait(deadline(60));
    outcomes[0].assert_success();
    assert!(!outcomes[1].success());
    assert!(!outcomes[1].hung);
    assert!(
        outcomes[1].stderr.contains("rank 1 fails on purpose"),
        "{}",
        outcomes[1].report("ran")
    );
}

#[test]
fn hung_stopped_and_killed_children() {
    if let Some((rank, _)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        board.put(rank, b"up").unwrap();
        if rank == 2 {
            // Waits for a "go" from the parent, which it can only act on once continued.
            board.get_named("go", deadline(60)).unwrap();
            return;
        }
        // Ranks 0 and 1 sleep until killed (bounded, in case the parent is gone).
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let board = Board::fresh("hung").unwrap();
    let mut group = procs::spawn_self("hung_stopped_and_killed_children", 3, &[board.env()]);
    board.get_all(3, deadline(60)).unwrap();
    group.stop(2);
    board.put_named("go", b"").unwrap();
    group.cont(2);
    group.kill(0);
    // Rank 1 sleeps far longer than this, so it is reported hung; rank 2 has time to finish.
    let outcomes = group.wait(deadline(8));
    assert_eq!(outcomes[0].signal(), Some(9), "{}", outcomes[0].report("was killed"));
    assert!(!outcomes[0].hung);
    assert!(outcomes[1].hung, "{}", outcomes[1].report("should have hung"));
    outcomes[2].assert_success();
}

#[test]
fn a_test_name_that_matches_nothing_is_not_a_success() {
    if procs::child_rank().is_some() {
        panic!("no child should run this test: the parent names another");
    }
    let outcomes = procs::spawn_self("no_such_test_in_this_binary", 1, &[]).wait(deadline(60));
    assert!(!outcomes[0].ran_one_test);
    assert!(!outcomes[0].success(), "{}", outcomes[0].report("ran"));
}

/// The role of a process in `a_child_whose_parent_is_killed_exits`.
const ROLE: &str = "GLOO_TEST_ORPHAN_ROLE";

#[test]
fn a_child_whose_parent_is_killed_exits() {
    let name = "a_child_whose_parent_is_killed_exits";
    if procs::child_rank().is_some() {
        let board = Board::from_env().expect("the parent passes a board");
        if std::env::var(ROLE).as_deref() == Ok("leaf") {
            board.put_named("leaf", std::process::id().to_string().as_bytes()).unwrap();
            // Outlive the test by far unless the orphan watch ends this process.
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
        // The middle process: start the leaf, wait until it runs, then die of SIGKILL, so no
        // destructor of ours can stop the leaf.
        let leaf = procs::spawn_self(name, 1, &[board.env(), (ROLE.into(), "leaf".into())]);
        board.get_named("leaf", deadline(30)).unwrap();
        let me = std::process::id().to_string();
        let _ = std::process::Command::new("kill").args(["-KILL", &me]).status();
        std::thread::sleep(Duration::from_secs(30));
        drop(leaf);
        panic!("the middle process outlived its own SIGKILL");
    }
    let board = Board::fresh("orphan").unwrap();
    let middle = procs::spawn_self(name, 1, &[board.env(), (ROLE.into(), "middle".into())]);
    let outcomes = middle.wait(deadline(60));
    assert_eq!(outcomes[0].signal(), Some(9), "{}", outcomes[0].report("the middle"));
    let pid = String::from_utf8(board.get_named("leaf", deadline(5)).unwrap()).unwrap();
    let pid: u32 = pid.parse().unwrap();
    assert!(
        procs::wait_gone(pid, deadline(30)),
        "the leaf (pid {pid}) still runs 30 s after its parent was killed"
    );
}
