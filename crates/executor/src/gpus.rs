//! The executor's GPUs and the tasks holding them: a task that asks for GPUs gets its own,
//! released when the task ends however it ends.

use std::sync::{Arc, Mutex};

/// The GPUs of this executor (CUDA device ordinals `0..n`), each free or held by one task.
#[derive(Debug)]
pub(crate) struct GpuPool {
    held: Mutex<Vec<bool>>,
}

/// GPUs one task holds; dropping it gives them back.
#[derive(Debug)]
pub(crate) struct GpuLease {
    pool: Arc<GpuPool>,
    ids: Vec<u32>,
}

impl GpuPool {
    /// A pool of `n` GPUs, all free.
    pub fn new(n: u32) -> Arc<Self> {
        Arc::new(GpuPool {
            held: Mutex::new(vec![false; n as usize]),
        })
    }

    /// GPUs no task holds.
    pub fn free(&self) -> u32 {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.iter().filter(|h| !**h).count() as u32
    }

    /// `n` free GPUs (the lowest ordinals), or None when fewer are free.
    pub fn take(self: &Arc<Self>, n: u32) -> Option<GpuLease> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<u32> = (0..held.len() as u32)
            .filter(|&i| !held[i as usize])
            .take(n as usize)
            .collect();
        if ids.len() < n as usize {
            return None;
        }
        for &i in &ids {
            held[i as usize] = true;
        }
        Some(GpuLease {
            pool: self.clone(),
            ids,
        })
    }
}

impl GpuLease {
    /// The ordinals held.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        let mut held = self.pool.held.lock().unwrap_or_else(|p| p.into_inner());
        for &i in &self.ids {
            held[i as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_hold_distinct_gpus_until_dropped() {
        let pool = GpuPool::new(3);
        let a = pool.take(2).unwrap();
        assert_eq!(a.ids(), &[0, 1]);
        assert_eq!(pool.free(), 1);
        assert!(pool.take(2).is_none(), "only one is free");
        let b = pool.take(1).unwrap();
        assert_eq!(b.ids(), &[2]);
        drop(a);
        assert_eq!(pool.free(), 2);
        assert_eq!(pool.take(1).unwrap().ids(), &[0]);
        assert!(GpuPool::new(0).take(1).is_none());
        assert_eq!(GpuPool::new(0).take(0).unwrap().ids(), &[] as &[u32]);
    }
}
