//! The communication thread of host buckets: all-reduces the buckets it is
//! sent, in the order sent, divides them by the world size, and sends each
//! back with the outcome, while the backward pass runs on the caller's
//! threads.

use super::bucket::Bucket;
use super::OP;
use crate::dist::Communicator;
use crate::{Error, Result};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

pub(super) struct Worker {
    jobs: Sender<(usize, Bucket)>,
    pub done: Receiver<(usize, Bucket, Result<()>)>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(comm: Arc<dyn Communicator + Send + Sync>) -> Result<Worker> {
        let (jobs, inbox) = channel::<(usize, Bucket)>();
        let (outbox, done) = channel();
        let world = comm.world_size();
        let thread = std::thread::Builder::new()
            .name("tamer-grad-allreduce".into())
            .spawn(move || {
                for (i, mut bucket) in inbox {
                    let r = match bucket.host_buf() {
                        Some(buf) => comm.all_reduce_sum(buf).and_then(|()| bucket.divide_by(world)),
                        None => Err(Error::value(OP, "a device bucket was sent to the host's communication thread")),
                    };
                    if outbox.send((i, bucket, r)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io(OP, format!("cannot start the communication thread: {e}")))?;
        Ok(Worker {
            jobs,
            done,
            thread: Some(thread),
        })
    }

    /// Hand bucket `i` to the thread.
    pub fn send(&self, i: usize, bucket: Bucket) -> Result<()> {
        self.jobs
            .send((i, bucket))
            .map_err(|_| Error::value(OP, "the communication thread has stopped"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it is idle (every step
        // waits for its buckets, so it is).
        let (closed, _) = channel();
        self.jobs = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
