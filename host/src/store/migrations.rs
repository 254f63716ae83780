//! Versioned schema. Each entry runs once, in order, inside a transaction;
//! `PRAGMA user_version` records how many have run. Never edit an entry that
//! has shipped: append a new one.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE tokens (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        hash        BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE hosts (
        name        TEXT PRIMARY KEY,
        engine      TEXT NOT NULL,
        config      TEXT NOT NULL,
        enabled     INTEGER NOT NULL DEFAULT 1,
        status      TEXT,
        status_at   INTEGER,
        polled_at   INTEGER,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    CREATE TABLE vms (
        host        TEXT NOT NULL REFERENCES hosts(name) ON DELETE CASCADE,
        vm_uuid     TEXT NOT NULL,
        config      TEXT NOT NULL,
        upload_key  TEXT NOT NULL,
        power_status TEXT NOT NULL DEFAULT 'unknown',
        flu_usage   REAL NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (host, vm_uuid)
    );
    CREATE UNIQUE INDEX vms_upload_key ON vms(upload_key);
    CREATE TABLE nat_rules (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        host        TEXT NOT NULL,
        vm_uuid     TEXT NOT NULL,
        protocol    TEXT NOT NULL,
        wan_port    INTEGER NOT NULL,
        lan_port    INTEGER NOT NULL,
        lan_addr    TEXT NOT NULL,
        nat_tips    TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL,
        FOREIGN KEY (host, vm_uuid) REFERENCES vms(host, vm_uuid) ON DELETE CASCADE,
        UNIQUE (host, protocol, wan_port)
    );
    CREATE TABLE proxies (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        host        TEXT NOT NULL,
        vm_uuid     TEXT NOT NULL,
        domain      TEXT NOT NULL UNIQUE,
        backend_ip  TEXT NOT NULL,
        backend_port INTEGER NOT NULL,
        ssl_enabled INTEGER NOT NULL DEFAULT 0,
        description TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL,
        FOREIGN KEY (host, vm_uuid) REFERENCES vms(host, vm_uuid) ON DELETE CASCADE
    );
    CREATE TABLE tasks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        actions     TEXT NOT NULL,
        host        TEXT NOT NULL DEFAULT '',
        vm_uuid     TEXT NOT NULL DEFAULT '',
        state       TEXT NOT NULL,
        progress    INTEGER NOT NULL DEFAULT 0,
        success     INTEGER,
        message     TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL,
        started_at  INTEGER,
        finished_at INTEGER
    );
    CREATE INDEX tasks_host ON tasks(host, id);
    CREATE INDEX tasks_state ON tasks(state, id);
    CREATE TABLE logs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        level       TEXT NOT NULL,
        host        TEXT NOT NULL DEFAULT '',
        vm_uuid     TEXT NOT NULL DEFAULT '',
        actions     TEXT NOT NULL DEFAULT '',
        message     TEXT NOT NULL,
        success     INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX logs_host ON logs(host, id);
    CREATE INDEX logs_level ON logs(level, id);
    CREATE TABLE samples (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        host        TEXT NOT NULL,
        vm_uuid     TEXT NOT NULL,
        source      TEXT NOT NULL,
        sample      TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX samples_vm ON samples(host, vm_uuid, created_at);
    "#,
    // 2: TLS material of proxy entries, so the proxy files (and their
    // certificates) can be rebuilt from the database alone.
    r#"
    ALTER TABLE proxies ADD COLUMN ssl_cert TEXT NOT NULL DEFAULT '';
    ALTER TABLE proxies ADD COLUMN ssl_key TEXT NOT NULL DEFAULT '';
    "#,
    // 3: `statis` counts running VMs without reading every VM's config.
    r#"
    CREATE INDEX vms_power ON vms(power_status);
    "#,
    // 4: named API tokens with a role and a host scope; only hashes.
    r#"
    CREATE TABLE api_tokens (
        name        TEXT PRIMARY KEY,
        role        TEXT NOT NULL,
        hosts       TEXT NOT NULL DEFAULT '[]',
        hash        BLOB NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        last_used_at INTEGER
    );
    "#,
    // 5: plans (a host's named VM config defaults, as panels sell them).
    r#"
    CREATE TABLE plans (
        host        TEXT NOT NULL REFERENCES hosts(name) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        config      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (host, name)
    );
    "#,
    // 6: the CPU model the engine's probe chose for a host (JSON).
    r#"
    ALTER TABLE hosts ADD COLUMN cpu TEXT;
    "#,
    // 7: the traffic period `flu_usage` counts (its first day), and the
    // over-quota measure in force ('', 'throttle', 'pause').
    r#"
    ALTER TABLE vms ADD COLUMN flu_period TEXT NOT NULL DEFAULT '';
    ALTER TABLE vms ADD COLUMN flu_limited TEXT NOT NULL DEFAULT '';
    "#,
    // 8: the VMs' rate limits the NAT capability installed for their
    // engines (addresses: a JSON array), so that a reconcile restores them.
    // No foreign key: the capability writes them for any host scope, and
    // `host_delete` removes a host's.
    r#"
    CREATE TABLE rate_limits (
        host          TEXT NOT NULL,
        vm_uuid       TEXT NOT NULL,
        addresses     TEXT NOT NULL,
        upload_kbps   INTEGER NOT NULL,
        download_kbps INTEGER NOT NULL,
        PRIMARY KEY (host, vm_uuid)
    );
    "#,
];

pub fn apply(connection: &mut Connection) -> rusqlite::Result<()> {
    let applied: usize = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (position, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", position + 1)?;
        transaction.commit()?;
    }
    Ok(())
}
