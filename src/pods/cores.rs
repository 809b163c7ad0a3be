//! Which cores running jobs are pinned to. A CPU quota alone caps how much time a pod takes, but a
//! pod with many busy processes still spreads them over every core and slows whatever runs there;
//! pinning each running job to the least busy cores (one job per core while jobs <= cores) keeps a
//! job's wall time independent of its neighbours.

use std::sync::{Arc, Mutex};

use crate::Locked as _;

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
    /// The cores this process may run on (its affinity, which its cpuset bounds).
    pub fn of_this_process() -> Option<Arc<Cores>> {
        let cores = crate::sandbox::affinity::of(0).ok()?;
        (!cores.is_empty()).then(|| Cores::new(cores))
    }

    pub fn new(cores: Vec<u32>) -> Arc<Cores> {
        Arc::new(Cores {
            jobs_on: Mutex::new(cores.into_iter().map(|c| (c, 0)).collect()),
        })
    }

    /// Takes the `n` least busy cores (all of them when `n` is larger); among equals the
    /// calling thread's own core first (the pod's runner then wakes, and answers, where Kiln
    /// already runs, not on a core that must be woken), then the lowest number.
    pub fn take(self: &Arc<Self>, n: u32) -> Pinned {
        let here = unsafe { libc::sched_getcpu() };
        self.take_near(n, u32::try_from(here).ok())
    }

    fn take_near(self: &Arc<Self>, n: u32, here: Option<u32>) -> Pinned {
        let mut jobs_on = self.jobs_on.locked();
        let mut order: Vec<usize> = (0..jobs_on.len()).collect();
        order.sort_by_key(|&i| (jobs_on[i].1, Some(jobs_on[i].0) != here, jobs_on[i].0));
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
        let mut jobs_on = self.cores.jobs_on.locked();
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
        let a = cores.take_near(1, None);
        let b = cores.take_near(1, None);
        let c = cores.take_near(2, None);
        assert_eq!((a.taken.clone(), b.taken.clone()), (vec![0], vec![1]));
        assert_eq!(
            c.taken,
            vec![2, 0],
            "the free core first, then the least busy"
        );
        drop(b);
        assert_eq!(
            cores.take_near(1, None).taken,
            vec![1],
            "a core given back is free again"
        );
        assert_eq!(
            cores.take_near(9, None).taken.len(),
            3,
            "never more cores than the host has"
        );
    }

    #[test]
    fn among_free_cores_the_callers_own_comes_first() {
        let cores = Cores::new(vec![0, 1, 2]);
        let a = cores.take_near(1, Some(2));
        assert_eq!(a.taken, vec![2], "the caller's core, free");
        let b = cores.take_near(2, Some(2));
        assert_eq!(
            b.taken,
            vec![0, 1],
            "the caller's core is busy: the free ones first"
        );
        drop(a);
        assert_eq!(
            cores.take_near(1, Some(7)).taken,
            vec![2],
            "a core Kiln may not pin to changes nothing: the least busy"
        );
    }
}
