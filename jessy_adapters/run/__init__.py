"""Running a spec: the chain policy (runner), one attempt (attempt), the backend process
under watch (supervise), one owner per run folder (lifecycle), the run folder (rundir), and
where the events go (console, tracking, tensorboard)."""
