//! The schedules' own tests.

use super::allreduce::Fold;
use super::trees::Tree;
use super::*;

#[test]
fn bcube_digits_multiply_to_the_world_size() {
    assert_eq!(bcube_digits(8, 2), vec![2, 2, 2]);
    assert_eq!(bcube_digits(12, 4), vec![4, 3]);
    assert_eq!(bcube_digits(13, 4), vec![13]);
    assert_eq!(bcube_digits(1, 4), Vec::<usize>::new());
    for n in 1..40 {
        for b in 2..6 {
            assert_eq!(bcube_digits(n, b).iter().product::<usize>(), n.max(1));
        }
    }
}

#[test]
fn fold_maps_core_ranks_onto_distinct_real_ranks() {
    for n in 1..20 {
        let f = Fold::new(n);
        let mut seen: Vec<usize> = (0..f.p).map(|nr| f.real(nr)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), f.p);
        assert!(seen.iter().all(|&r| r < n));
    }
}

#[test]
fn tree_children_split_each_subtree_and_name_their_parent() {
    for n in 1..20 {
        for root in 0..n {
            for rank in 0..n {
                let t = Tree::at(rank, n, root);
                assert_eq!(t.parent().is_none(), rank == root);
                // The children's subtrees follow this rank and tile the rest of its own.
                let mut next = t.vr + 1;
                for c in t.children() {
                    assert_eq!(c.start, next, "n={n} root={root} rank={rank}");
                    assert!(c.start < c.end);
                    let child = Tree::at(t.real(c.start), n, root);
                    assert_eq!(child.parent(), Some(rank));
                    assert_eq!(child.subtree(), c);
                    next = c.end;
                }
                assert_eq!(next, t.subtree().end, "n={n} root={root} rank={rank}");
            }
        }
    }
}

#[test]
fn the_root_puts_blocks_back_in_rank_order() {
    let t = Tree::at(2, 3, 2);
    let sizes = [1, 2, 3];
    let off = t.offsets(&sizes);
    // Relative order is ranks 2, 0, 1.
    assert_eq!(off, [0, 3, 4, 6]);
    assert_eq!(t.to_rank_order(&off, &sizes), [(0..3, 3..6), (3..4, 0..1), (4..6, 1..3)]);
    assert_eq!(t.layout(&off), (6, vec![(0, 3..4), (1, 4..6)]));
}

#[test]
fn subtree_masks() {
    assert_eq!(subtree_mask(0, 5), 8);
    assert_eq!(subtree_mask(4, 5), 4);
    assert_eq!(subtree_mask(6, 8), 2);
    assert_eq!(pow2_floor(13), 8);
    assert_eq!(pow2_floor(1), 1);
}
