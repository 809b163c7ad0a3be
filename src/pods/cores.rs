//! Which cores running jobs are pinned to. A CPU quota alone caps how much time a pod takes, but a
//! pod with many busy processes still spreads them over every core and slows whatever runs there;
//! pinning each running job to the least busy cores (one job per core while jobs <= cores) keeps a
//! job's wall time independent of its neighbours.

use std::sync::{Arc, Mutex};

/// The host's pinnable cores and how many running jobs each one holds.
#[derive(Debug)]
pub struct Cores {
    jobs_on: Mutex<Vec<(u32, u32)>>,
}

/// Cores taken by one running job; given back when dropped.
#[derive(Debug)]
pub struct Pinned {
    cores: Arc<Cores>,
    pub taken: Vec<u32>,
}

impl Cores {
    pub fn new(cores: Vec<u32>) -> Arc<Cores> {
        Arc::new(Cores {
            jobs_on: Mutex::new(cores.into_iter().map(|c| (c, 0)).collect()),
        })
    }

    /// Takes the `n` least busy cores (all of them when `n` is larger), lowest number first
    /// among equals.
    pub fn take(self: &Arc<Self>, n: u32) -> Pinned {
        let mut jobs_on = self.jobs_on.lock().unwrap_or_else(|p| p.into_inner());
        let mut order: Vec<usize> = (0..jobs_on.len()).collect();
        order.sort_by_key(|&i| (jobs_on[i].1, jobs_on[i].0));
        let taken: Vec<u32> = order
            .into_iter()
            .take(n.max(1) as usize)
            .map(|i| {
                jobs_on[i].1 += 1;
                jobs_on[i].0
            })
            .collect();
        Pinned {
            cores: self.clone(),
            taken,
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let mut jobs_on = self.cores.jobs_on.lock().unwrap_or_else(|p| p.into_inner());
        for core in &self.taken {
            if let Some(slot) = jobs_on.iter_mut().find(|(c, _)| c == core) {
                slot.1 = slot.1.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_spread_over_free_cores_first_and_give_them_back() {
        let cores = Cores::new(vec![0, 1, 2]);
        let a = cores.take(1);
        let b = cores.take(1);
        let c = cores.take(2);
        assert_eq!((a.taken.clone(), b.taken.clone()), (vec![0], vec![1]));
        assert_eq!(
            c.taken,
            vec![2, 0],
            "the free core first, then the least busy"
        );
        drop(b);
        assert_eq!(
            cores.take(1).taken,
            vec![1],
            "a core given back is free again"
        );
        assert_eq!(
            cores.take(9).taken.len(),
            3,
            "never more cores than the host has"
        );
    }
}
