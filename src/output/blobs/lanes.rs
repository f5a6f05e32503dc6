//! Jobs side by side, one per pool thread at most, the largest first, results by index (the
//! lanes of the thread model in `super`'s doc).

use std::cmp::Reverse;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::Result;

/// Layers in progress at once: one per worker of the pool.
pub fn width() -> usize {
    rayon::current_num_threads().max(1)
}

/// Runs `job` on every index below `count`, at most `width()` at once, those of the largest
/// `size` first; the results in index order. After a failure no job starts, and the failure
/// of the lowest index is returned.
pub fn run<T: Send>(
    count: usize,
    size: impl Fn(usize) -> u64,
    job: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let lanes = width().min(count);
    if lanes <= 1 {
        return (0..count).map(job).collect();
    }
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_cached_key(|&index| (Reverse(size(index)), index));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<T>>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let lane = || {
        while !failed.load(Ordering::Relaxed) {
            let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            let result = job(index);
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            *results[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..lanes {
            // A lane that cannot start leaves its layers to the others.
            let _ = std::thread::Builder::new()
                .name("lg-layer".to_string())
                .spawn_scoped(scope, lane);
        }
        // This thread is a lane too: the layers get written even if no thread could start.
        lane();
    });
    let mut done = Vec::with_capacity(count);
    let mut skipped = false;
    for slot in results {
        match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(result) => done.push(result?),
            None => skipped = true,
        }
    }
    if skipped {
        // Only a failure stops jobs from starting, and it was returned above.
        return Err(crate::error::Error::value(
            "a layer was not written, and no layer failed",
        ));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn results_come_back_by_index_whatever_ran_first() {
        for threads in [1, 2, 8] {
            let started = Mutex::new(Vec::new());
            let out = pool(threads).install(|| {
                run(
                    20,
                    |i| (i as u64 * 7) % 11,
                    |i| {
                        started.lock().unwrap().push(i);
                        Ok(i * 10)
                    },
                )
            });
            assert_eq!(out.unwrap(), (0..20).map(|i| i * 10).collect::<Vec<_>>());
            let started = started.into_inner().unwrap();
            assert_eq!(started.len(), 20);
            if threads > 1 {
                // The first to start is one of the largest (size 10: index 3, 14).
                assert!(started[..threads].contains(&3), "{started:?}");
            }
        }
    }

    #[test]
    fn at_most_one_layer_per_worker_is_in_progress() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        pool(3)
            .install(|| {
                run(
                    30,
                    |_| 1,
                    |_| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    },
                )
            })
            .unwrap();
        assert!(most.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn a_failure_stops_new_jobs_and_the_lowest_failure_is_returned() {
        let ran = AtomicUsize::new(0);
        let error = pool(2)
            .install(|| {
                run(
                    1000,
                    |_| 1,
                    |i| {
                        ran.fetch_add(1, Ordering::SeqCst);
                        if i >= 5 {
                            Err(Error::value(format!("layer {i} failed")))
                        } else {
                            Ok(())
                        }
                    },
                )
            })
            .unwrap_err();
        assert!(ran.load(Ordering::SeqCst) < 1000);
        assert!(error.to_string().contains("layer 5 failed"), "{error}");
    }
}
