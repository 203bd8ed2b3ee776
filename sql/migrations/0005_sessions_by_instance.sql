-- 0005_sessions_by_instance: finding the running sessions of an instance
-- (to mark them lost when it dies) without scanning every session.

CREATE INDEX agent_sessions_running_by_instance ON agent_sessions (state, instance);
