//! What setSecret checks and copies besides the password.
//!
//! Refusals: the master never changes a role outside the configured pair, a privileged role
//! (or one that inherits from one), or a NOLOGIN role.
//!
//! Mirroring: `rotation.user` is the role the DBA manages; at every rotation its clone is made
//! an exact copy of it, in the same transaction as the password change: role memberships
//! (added *and* revoked), INHERIT and CONNECTION LIMIT, `ALTER ROLE ... SET` settings (global
//! and per database), direct privileges on the tables, views, sequences, columns, functions and
//! schemas of the application's database and on the database itself, and the rows of
//! `enkf.location_grants`. The result is read back and compared before COMMIT: PostgreSQL only
//! warns when a GRANT or REVOKE by a non-owner does nothing, so success of the statements
//! alone proves nothing.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::pair::Pair;
use super::protocol::{quote_ident, quote_literal};
use super::RotationError;

/// Predefined roles that reach server files or programs, or every table past its grants:
/// membership in them is as dangerous as the attributes refused below.
pub const PRIVILEGED_PREDEFINED: &[&str] = &[
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_read_all_data",
    "pg_write_all_data",
];

/// Settings whose value is a list of identifiers, each quoted on its own (GUC_LIST_QUOTE): the
/// list pg_dump uses (`variable_is_guc_list_quote`) to re-create `ALTER ROLE ... SET`.
const LIST_QUOTE_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjKind {
    Table,
    Sequence,
    Column,
    Function,
    Procedure,
    Schema,
    Database,
}

impl ObjKind {
    fn parse(s: &str) -> Option<ObjKind> {
        Some(match s {
            "table" => ObjKind::Table,
            "sequence" => ObjKind::Sequence,
            "column" => ObjKind::Column,
            "function" => ObjKind::Function,
            "procedure" => ObjKind::Procedure,
            "schema" => ObjKind::Schema,
            "database" => ObjKind::Database,
            _ => return None,
        })
    }

    /// The object type keyword of GRANT/REVOKE (a column is granted on its table).
    fn keyword(self) -> &'static str {
        match self {
            ObjKind::Table | ObjKind::Column => "TABLE",
            ObjKind::Sequence => "SEQUENCE",
            ObjKind::Function => "FUNCTION",
            ObjKind::Procedure => "PROCEDURE",
            ObjKind::Schema => "SCHEMA",
            ObjKind::Database => "DATABASE",
        }
    }
}

/// One direct privilege; `object` and `column` are already quoted SQL names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Privilege {
    pub kind: ObjKind,
    pub object: String,
    pub column: Option<String>,
    pub privilege: String,
}

impl Privilege {
    /// `SELECT ("a") ON TABLE public.t`
    fn target(&self) -> String {
        match &self.column {
            Some(c) => format!(
                "{} ({c}) ON {} {}",
                self.privilege,
                self.kind.keyword(),
                self.object
            ),
            None => format!(
                "{} ON {} {}",
                self.privilege,
                self.kind.keyword(),
                self.object
            ),
        }
    }
}

/// Options of one membership. `inherit` and `set` exist from PostgreSQL 16 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub admin: bool,
    pub inherit: Option<bool>,
    pub set: Option<bool>,
}

/// Type of `enkf.location_grants.role`: `name` today, `regrole` once roles are keyed by OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleColumn {
    Name,
    Regrole,
}

impl RoleColumn {
    /// A SQL literal of `role` in the column's type. A regrole literal is parsed as an
    /// identifier, hence the inner quoting.
    pub fn literal(self, role: &str) -> String {
        match self {
            RoleColumn::Name => format!("{}::pg_catalog.name", quote_literal(role)),
            RoleColumn::Regrole => {
                format!("{}::pg_catalog.regrole", quote_literal(&quote_ident(role)))
            }
        }
    }
}

/// Everything about a role that the clone must share with `rotation.user`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub inherit: bool,
    pub connlimit: i32,
    /// Granted role -> options.
    pub memberships: BTreeMap<String, Membership>,
    /// Database name (`None`: every database) -> `name=value` entries.
    pub settings: BTreeMap<Option<String>, BTreeSet<String>>,
    /// Direct privileges -> grant option.
    pub privileges: BTreeMap<Privilege, bool>,
    /// Locations in `enkf.location_grants`; `None` when the table does not exist here.
    pub locations: Option<BTreeSet<String>>,
}

fn refused(text: String) -> RotationError {
    RotationError::Refused(text)
}

struct RoleRow {
    can_login: bool,
}

async fn role_row(client: &Client, name: &str) -> Result<Option<RoleRow>, RotationError> {
    Ok(client
        .query_opt(
            "SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await?
        .map(|r| RoleRow {
            can_login: r.get(0),
        }))
}

/// Why `name` counts as privileged: its own attributes, or those of any role it is a member
/// of, directly or not (membership allows SET ROLE whatever INHERIT says).
async fn privileged_reasons(client: &Client, name: &str) -> Result<Vec<String>, RotationError> {
    let rows = client
        .query(
            "WITH RECURSIVE up(oid) AS (
                 SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = $1
                 UNION
                 SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN up ON m.member = up.oid)
             SELECT r.rolname::text,
                    pg_catalog.concat_ws(', ',
                        CASE WHEN r.rolsuper THEN 'SUPERUSER' END,
                        CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
                        CASE WHEN r.rolcreatedb THEN 'CREATEDB' END,
                        CASE WHEN r.rolreplication THEN 'REPLICATION' END,
                        CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END,
                        CASE WHEN r.rolname = ANY($2) THEN 'access to server files, programs or all data' END)
               FROM up JOIN pg_catalog.pg_roles r ON r.oid = up.oid
              WHERE r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication
                    OR r.rolbypassrls OR r.rolname = ANY($2)
              ORDER BY 1",
            &[&name, &PRIVILEGED_PREDEFINED],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (role, what): (String, String) = (r.get(0), r.get(1));
            if role == name {
                format!("{name:?} has {what}")
            } else {
                format!("{name:?} is a member of {role:?}, which has {what}")
            }
        })
        .collect())
}

/// Refuses, before anything is changed, a rotation that would give a password and LOGIN to
/// a role it must not: a privileged role, a NOLOGIN role, or a pair that is not two
/// independent logins.
pub async fn refuse_unsafe(
    client: &Client,
    pair: &Pair,
    pending: &str,
) -> Result<(), RotationError> {
    if role_row(client, &pair.user).await?.is_none() {
        return Err(refused(format!(
            "rotation.user {:?} does not exist in the database; its clone {:?} is made from it, so create it first. No role was changed",
            pair.user, pair.clone
        )));
    }
    let clone_exists = role_row(client, &pair.clone).await?.is_some();
    if !clone_exists && pending != pair.clone {
        return Err(refused(format!(
            "AWSCURRENT names {:?}, which does not exist in the database. No role was changed",
            pair.clone
        )));
    }
    let mut reasons = privileged_reasons(client, &pair.user).await?;
    if clone_exists {
        reasons.extend(privileged_reasons(client, &pair.clone).await?);
    }
    if !reasons.is_empty() {
        return Err(refused(format!(
            "{pending:?} would get a new password and LOGIN, but {}. The sidecar never rotates a privileged role (SUPERUSER, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS, or membership in a role with one of them or in {}). No role was changed",
            reasons.join("; "),
            PRIVILEGED_PREDEFINED.join(", ")
        )));
    }
    if let Some(r) = role_row(client, pending).await? {
        if !r.can_login {
            return Err(refused(format!(
                "{pending:?} exists as a NOLOGIN role (a group role?), and the sidecar never turns a NOLOGIN role into a login. No role was changed; if {pending:?} really is the rotated login, run ALTER ROLE {} LOGIN first",
                quote_ident(pending)
            )));
        }
    }
    let crossed = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_auth_members m
               JOIN pg_catalog.pg_roles a ON a.oid = m.member
               JOIN pg_catalog.pg_roles b ON b.oid = m.roleid
              WHERE (a.rolname = $1 AND b.rolname = $2) OR (a.rolname = $2 AND b.rolname = $1)",
            &[&pair.user, &pair.clone],
        )
        .await?;
    if crossed.is_some() {
        return Err(refused(format!(
            "{:?} and {:?} are members of one another; the pair must be two independent logins. No role was changed",
            pair.user, pair.clone
        )));
    }
    Ok(())
}

/// Reads snapshots in the master's session (in the application's database).
pub struct Reader<'a> {
    client: &'a Client,
    pg16: bool,
    locations: Option<RoleColumn>,
}

impl<'a> Reader<'a> {
    pub async fn new(client: &'a Client, master: &str) -> Result<Reader<'a>, RotationError> {
        let version: i32 = client
            .query_one(
                "SELECT pg_catalog.current_setting('server_version_num')::int4",
                &[],
            )
            .await?
            .get(0);
        // Found through the catalogs: a cast to regclass would need USAGE on schema enkf,
        // which the check below reports with a better message.
        let table = client
            .query_opt(
                "SELECT c.oid, t.typname::text,
                        pg_catalog.row_security_active(c.oid)
                          AND NOT (EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'enkf_admin')
                                   AND pg_catalog.pg_has_role('enkf_admin', 'MEMBER')),
                        pg_catalog.has_schema_privilege(n.oid, 'USAGE')
                          -- one call per privilege: a list would mean any of them
                          AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
                          AND pg_catalog.has_table_privilege(c.oid, 'INSERT')
                          AND pg_catalog.has_table_privilege(c.oid, 'DELETE')
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
                   JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                  WHERE n.nspname = 'enkf' AND c.relname = 'location_grants'
                    AND a.attname = 'role' AND NOT a.attisdropped",
                &[],
            )
            .await?;
        let locations = match table {
            None => None,
            Some(row) => {
                let (typname, hidden, allowed): (String, bool, bool) =
                    (row.get(1), row.get(2), row.get(3));
                // Row-level security would hide other roles' rows from the master, and the
                // copy would then silently drop the user's location grants.
                if hidden || !allowed {
                    return Err(RotationError::Mirror(format!(
                        "the master {master:?} cannot see every row of enkf.location_grants ({}), so it cannot copy the location grants; GRANT enkf_admin TO {}",
                        if hidden {
                            "row-level security applies to it and it is not a member of enkf_admin"
                        } else {
                            "it lacks USAGE on schema enkf or SELECT, INSERT, DELETE on the table"
                        },
                        quote_ident(master)
                    )));
                }
                match typname.as_str() {
                    "name" => Some(RoleColumn::Name),
                    "regrole" => Some(RoleColumn::Regrole),
                    t => {
                        return Err(RotationError::Mirror(format!(
                            "enkf.location_grants.role has type {t}; the sidecar copies rows keyed by name or regrole"
                        )))
                    }
                }
            }
        };
        Ok(Reader {
            client,
            pg16: version >= 160_000,
            locations,
        })
    }

    pub async fn snapshot(&self, role: &str) -> Result<Snapshot, RotationError> {
        let row = self
            .client
            .query_one(
                "SELECT oid, rolinherit, rolconnlimit FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await?;
        let oid: u32 = row.get(0);
        let mut snap = Snapshot {
            inherit: row.get(1),
            connlimit: row.get(2),
            ..Snapshot::default()
        };
        let membership_sql = if self.pg16 {
            // One row per grantor from 16 on: the role has what any of them gives.
            "SELECT r.rolname::text, pg_catalog.bool_or(m.admin_option),
                    pg_catalog.bool_or(m.inherit_option), pg_catalog.bool_or(m.set_option)
               FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
              WHERE m.member = $1 GROUP BY 1"
        } else {
            "SELECT r.rolname::text, m.admin_option, NULL::bool, NULL::bool
               FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
              WHERE m.member = $1"
        };
        for r in self.client.query(membership_sql, &[&oid]).await? {
            snap.memberships.insert(
                r.get(0),
                Membership {
                    admin: r.get(1),
                    inherit: r.get(2),
                    set: r.get(3),
                },
            );
        }
        for r in self
            .client
            .query(
                "SELECT d.datname::text, s.setconfig
                   FROM pg_catalog.pg_db_role_setting s
                   LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
                  WHERE s.setrole = $1 AND (s.setdatabase = 0 OR d.oid IS NOT NULL)",
                &[&oid],
            )
            .await?
        {
            let items: Vec<String> = r.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
            if !items.is_empty() {
                snap.settings.entry(r.get(0)).or_default().extend(items);
            }
        }
        for r in self.client.query(PRIVILEGES_SQL, &[&oid]).await? {
            let kind: String = r.get(0);
            let kind = ObjKind::parse(&kind)
                .ok_or_else(|| RotationError::Mirror(format!("unexpected object kind {kind}")))?;
            snap.privileges.insert(
                Privilege {
                    kind,
                    object: r.get(1),
                    column: r.get(2),
                    privilege: r.get(3),
                },
                r.get(4),
            );
        }
        if let Some(column) = self.locations {
            let sql = format!(
                "SELECT g.location FROM enkf.location_grants g WHERE g.role = {}",
                column.literal(role)
            );
            let rows = self.client.query(sql.as_str(), &[]).await?;
            snap.locations = Some(rows.iter().map(|r| r.get(0)).collect());
        }
        Ok(snap)
    }

    pub fn pg16(&self) -> bool {
        self.pg16
    }

    pub fn location_column(&self) -> Option<RoleColumn> {
        self.locations
    }
}

/// Direct privileges of role `$1` on the objects of the current database, without those it
/// has as owner (ownership is not copied). Names come back quoted and schema-qualified (the
/// master's sessions run with search_path = pg_catalog).
const PRIVILEGES_SQL: &str = "
SELECT 'table', c.oid::pg_catalog.regclass::text, NULL::text, a.privilege_type, pg_catalog.bool_or(a.is_grantable)
  FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
 WHERE c.relacl IS NOT NULL AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relpersistence <> 't'
   AND a.grantee = $1 AND c.relowner <> $1
 GROUP BY 1, 2, 3, 4
UNION ALL
SELECT 'sequence', c.oid::pg_catalog.regclass::text, NULL, a.privilege_type, pg_catalog.bool_or(a.is_grantable)
  FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
 WHERE c.relacl IS NOT NULL AND c.relkind = 'S' AND c.relpersistence <> 't'
   AND a.grantee = $1 AND c.relowner <> $1
 GROUP BY 1, 2, 3, 4
UNION ALL
SELECT 'column', c.oid::pg_catalog.regclass::text, pg_catalog.quote_ident(att.attname), a.privilege_type,
       pg_catalog.bool_or(a.is_grantable)
  FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_class c ON c.oid = att.attrelid
       CROSS JOIN LATERAL pg_catalog.aclexplode(att.attacl) a
 WHERE att.attacl IS NOT NULL AND NOT att.attisdropped AND c.relpersistence <> 't'
   AND a.grantee = $1 AND c.relowner <> $1
 GROUP BY 1, 2, 3, 4
UNION ALL
SELECT CASE WHEN p.prokind = 'p' THEN 'procedure' ELSE 'function' END, p.oid::pg_catalog.regprocedure::text, NULL,
       a.privilege_type, pg_catalog.bool_or(a.is_grantable)
  FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
 WHERE p.proacl IS NOT NULL AND a.grantee = $1 AND p.proowner <> $1
 GROUP BY 1, 2, 3, 4
UNION ALL
SELECT 'schema', pg_catalog.quote_ident(n.nspname), NULL, a.privilege_type, pg_catalog.bool_or(a.is_grantable)
  FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
 WHERE n.nspacl IS NOT NULL AND a.grantee = $1 AND n.nspowner <> $1
 GROUP BY 1, 2, 3, 4
UNION ALL
SELECT 'database', pg_catalog.quote_ident(d.datname), NULL, a.privilege_type, pg_catalog.bool_or(a.is_grantable)
  FROM pg_catalog.pg_database d CROSS JOIN LATERAL pg_catalog.aclexplode(d.datacl) a
 WHERE d.datname = pg_catalog.current_database() AND d.datacl IS NOT NULL
   AND a.grantee = $1 AND d.datdba <> $1
 GROUP BY 1, 2, 3, 4";

/// Splits a list setting as PostgreSQL's SplitGUCList does: comma-separated elements,
/// surrounding whitespace dropped, double-quoted elements with `""` for a quote, unquoted
/// ones kept as they are. `None` for malformed input.
pub fn split_guc_list(raw: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = raw.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i == chars.len() {
        return Some(out);
    }
    loop {
        let mut item = String::new();
        if chars[i] == '"' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return None,
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        item.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        item.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && chars[i] != ',' && !chars[i].is_ascii_whitespace() {
                item.push(chars[i]);
                i += 1;
            }
            if item.is_empty() {
                return None;
            }
        }
        out.push(item);
        skip_ws(&mut i);
        match chars.get(i) {
            None => return Some(out),
            Some(',') => {
                i += 1;
                skip_ws(&mut i);
            }
            Some(_) => return None,
        }
    }
}

/// `ALTER ROLE clone [IN DATABASE d] SET name TO value` from a stored `name=value` entry,
/// quoting the value as pg_dump does so that the stored entry comes out identical.
pub fn set_statement(
    role: &str,
    database: Option<&str>,
    entry: &str,
) -> Result<String, RotationError> {
    let (name, value) = entry
        .split_once('=')
        .ok_or_else(|| RotationError::Mirror(format!("role setting {entry:?} has no '='")))?;
    let value = if LIST_QUOTE_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        let items = split_guc_list(value).ok_or_else(|| {
            RotationError::Mirror(format!(
                "cannot parse the list value of role setting {name}"
            ))
        })?;
        if items.is_empty() {
            "''".to_string()
        } else {
            items
                .iter()
                .map(|s| quote_literal(s))
                .collect::<Vec<_>>()
                .join(", ")
        }
    } else {
        quote_literal(value)
    };
    Ok(format!(
        "ALTER ROLE {}{} SET {} TO {value}",
        quote_ident(role),
        in_database(database),
        quote_ident(name)
    ))
}

fn in_database(database: Option<&str>) -> String {
    database
        .map(|d| format!(" IN DATABASE {}", quote_ident(d)))
        .unwrap_or_default()
}

fn grant_membership(group: &str, role: &str, m: Membership, pg16: bool) -> String {
    let (g, r) = (quote_ident(group), quote_ident(role));
    if pg16 {
        format!(
            "GRANT {g} TO {r} WITH ADMIN {}, INHERIT {}, SET {}",
            m.admin,
            m.inherit.unwrap_or(true),
            m.set.unwrap_or(true)
        )
    } else if m.admin {
        format!("GRANT {g} TO {r} WITH ADMIN OPTION")
    } else {
        format!("GRANT {g} TO {r}")
    }
}

/// The statements that turn `clone` (as it is now) into a copy of `user`: every removal
/// first (a table-level REVOKE also removes column privileges of the same kind), then every
/// addition.
pub fn plan(
    pair: &Pair,
    user: &Snapshot,
    clone: &Snapshot,
    pg16: bool,
    locations: Option<RoleColumn>,
) -> Result<Vec<String>, RotationError> {
    let mut plan = Plan {
        role: &pair.clone,
        quoted: quote_ident(&pair.clone),
        revokes: Vec::new(),
        grants: Vec::new(),
    };
    plan.copy_attributes(user, clone);
    plan.copy_memberships(user, clone, pg16);
    plan.copy_settings(user, clone)?;
    plan.copy_privileges(user, clone);
    if let (Some(column), Some(want), Some(have)) = (locations, &user.locations, &clone.locations) {
        plan.copy_locations(column, want, have);
    }
    plan.revokes.extend(plan.grants);
    Ok(plan.revokes)
}

/// The statements of a plan as it is built, removals and additions apart (all removals run
/// first), for the clone `role` (`quoted`: as a SQL identifier).
struct Plan<'a> {
    role: &'a str,
    quoted: String,
    revokes: Vec<String>,
    grants: Vec<String>,
}

impl Plan<'_> {
    /// INHERIT and CONNECTION LIMIT, in one ALTER ROLE when either differs.
    fn copy_attributes(&mut self, user: &Snapshot, clone: &Snapshot) {
        if user.inherit != clone.inherit || user.connlimit != clone.connlimit {
            self.grants.push(format!(
                "ALTER ROLE {} WITH {} CONNECTION LIMIT {}",
                self.quoted,
                if user.inherit { "INHERIT" } else { "NOINHERIT" },
                user.connlimit
            ));
        }
    }

    /// Revokes the memberships (or admin options) the user lacks, grants those the clone
    /// lacks or has with other options (INHERIT and SET exist from PostgreSQL 16 on).
    fn copy_memberships(&mut self, user: &Snapshot, clone: &Snapshot, pg16: bool) {
        let c = &self.quoted;
        for (group, m) in &clone.memberships {
            match user.memberships.get(group) {
                None => self
                    .revokes
                    .push(format!("REVOKE {} FROM {c} CASCADE", quote_ident(group))),
                Some(want) if want.admin != m.admin && !want.admin => self.revokes.push(format!(
                    "REVOKE ADMIN OPTION FOR {} FROM {c} CASCADE",
                    quote_ident(group)
                )),
                _ => {}
            }
        }
        for (group, want) in &user.memberships {
            let have = clone.memberships.get(group);
            let differs = match have {
                None => true,
                Some(h) => {
                    (want.admin && !h.admin)
                        || (pg16 && (h.inherit, h.set) != (want.inherit, want.set))
                }
            };
            if differs {
                self.grants
                    .push(grant_membership(group, self.role, *want, pg16));
            }
        }
    }

    /// Per database whose settings differ: RESET ALL of the clone's, then the user's, one
    /// SET each.
    fn copy_settings(&mut self, user: &Snapshot, clone: &Snapshot) -> Result<(), RotationError> {
        if user.settings == clone.settings {
            return Ok(());
        }
        let databases: BTreeSet<&Option<String>> =
            clone.settings.keys().chain(user.settings.keys()).collect();
        for db in databases {
            if user.settings.get(db) == clone.settings.get(db) {
                continue;
            }
            if clone.settings.contains_key(db) {
                self.revokes.push(format!(
                    "ALTER ROLE {}{} RESET ALL",
                    self.quoted,
                    in_database(db.as_deref())
                ));
            }
            for entry in user.settings.get(db).into_iter().flatten() {
                self.grants
                    .push(set_statement(self.role, db.as_deref(), entry)?);
            }
        }
        Ok(())
    }

    /// Revokes the privileges (or grant options) the user lacks, grants those the clone
    /// lacks.
    fn copy_privileges(&mut self, user: &Snapshot, clone: &Snapshot) {
        let c = &self.quoted;
        for (p, grantable) in &clone.privileges {
            match user.privileges.get(p) {
                None => self
                    .revokes
                    .push(format!("REVOKE {} FROM {c} CASCADE", p.target())),
                Some(false) if *grantable => self.revokes.push(format!(
                    "REVOKE GRANT OPTION FOR {} FROM {c} CASCADE",
                    p.target()
                )),
                _ => {}
            }
        }
        for (p, grantable) in &user.privileges {
            let have = clone.privileges.get(p);
            if have.is_none() || (*grantable && have == Some(&false)) {
                self.grants.push(format!(
                    "GRANT {} TO {c}{}",
                    p.target(),
                    if *grantable { " WITH GRANT OPTION" } else { "" }
                ));
            }
        }
    }

    /// Deletes the clone's rows of `enkf.location_grants` the user lacks, inserts those it
    /// lacks (`want`: the user's locations, `have`: the clone's).
    fn copy_locations(
        &mut self,
        column: RoleColumn,
        want: &BTreeSet<String>,
        have: &BTreeSet<String>,
    ) {
        let role = column.literal(self.role);
        for loc in have.difference(want) {
            self.revokes.push(format!(
                "DELETE FROM enkf.location_grants WHERE role = {role} AND location = {}",
                quote_literal(loc)
            ));
        }
        for loc in want.difference(have) {
            self.grants.push(format!(
                "INSERT INTO enkf.location_grants (role, location) VALUES ({role}, {})",
                quote_literal(loc)
            ));
        }
    }
}

/// What still differs between `user` and `clone`, one line per difference (empty: a copy).
pub fn differences(pair: &Pair, user: &Snapshot, clone: &Snapshot) -> Vec<String> {
    let (u, c) = (&pair.user, &pair.clone);
    let mut out = Vec::new();
    if (user.inherit, user.connlimit) != (clone.inherit, clone.connlimit) {
        out.push(format!(
            "INHERIT/CONNECTION LIMIT: {u} has {}/{}, {c} has {}/{}",
            user.inherit, user.connlimit, clone.inherit, clone.connlimit
        ));
    }
    let groups: BTreeSet<&String> = user
        .memberships
        .keys()
        .chain(clone.memberships.keys())
        .collect();
    for g in groups {
        let (a, b) = (user.memberships.get(g), clone.memberships.get(g));
        if a != b {
            out.push(format!("membership in {g:?}: {u} has {a:?}, {c} has {b:?}"));
        }
    }
    let dbs: BTreeSet<&Option<String>> =
        user.settings.keys().chain(clone.settings.keys()).collect();
    for db in dbs {
        let (a, b) = (user.settings.get(db), clone.settings.get(db));
        if a != b {
            out.push(format!(
                "settings ({}): {u} has {a:?}, {c} has {b:?}",
                db.as_deref().unwrap_or("all databases")
            ));
        }
    }
    let privs: BTreeSet<&Privilege> = user
        .privileges
        .keys()
        .chain(clone.privileges.keys())
        .collect();
    for p in privs {
        let (a, b) = (user.privileges.get(p), clone.privileges.get(p));
        if a != b {
            let show = |x: Option<&bool>| match x {
                None => "no",
                Some(false) => "yes",
                Some(true) => "yes, WITH GRANT OPTION",
            };
            out.push(format!("{}: {u} {}, {c} {}", p.target(), show(a), show(b)));
        }
    }
    if user.locations != clone.locations {
        out.push(format!(
            "enkf.location_grants: {u} has {:?}, {c} has {:?}",
            user.locations, clone.locations
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Pair {
        Pair {
            user: "app".into(),
            clone: "app_clone".into(),
        }
    }

    fn member(admin: bool) -> Membership {
        Membership {
            admin,
            inherit: None,
            set: None,
        }
    }

    fn table_priv(privilege: &str) -> Privilege {
        Privilege {
            kind: ObjKind::Table,
            object: "public.t".into(),
            column: None,
            privilege: privilege.into(),
        }
    }

    #[test]
    fn guc_lists_split_like_postgres() {
        assert_eq!(
            split_guc_list(r#""$user", public, "we ird""#).unwrap(),
            vec!["$user", "public", "we ird"]
        );
        assert_eq!(split_guc_list(r#""a""b""#).unwrap(), vec![r#"a"b"#]);
        assert_eq!(split_guc_list(r#""""#).unwrap(), vec![""]);
        assert_eq!(split_guc_list("  ").unwrap(), Vec::<String>::new());
        assert!(split_guc_list("a,,b").is_none());
        assert!(split_guc_list(r#""open"#).is_none());
        assert!(split_guc_list("a b").is_none());
    }

    #[test]
    fn settings_are_quoted_as_pg_dump_does() {
        assert_eq!(
            set_statement("c", None, r#"search_path="$user", public"#).unwrap(),
            r#"ALTER ROLE "c" SET "search_path" TO '$user', 'public'"#
        );
        // Not a list setting: the whole value is one literal, commas included.
        assert_eq!(
            set_statement("c", Some("db"), "pgaudit.log=read, write").unwrap(),
            r#"ALTER ROLE "c" IN DATABASE "db" SET "pgaudit.log" TO 'read, write'"#
        );
        assert_eq!(
            set_statement("c", None, "application_name=it's").unwrap(),
            r#"ALTER ROLE "c" SET "application_name" TO 'it''s'"#
        );
        assert!(set_statement("c", None, "no-equals").is_err());
    }

    #[test]
    fn the_plan_revokes_before_it_grants() {
        let mut user = Snapshot {
            inherit: true,
            connlimit: -1,
            ..Snapshot::default()
        };
        let mut clone = user.clone();
        user.memberships.insert("g1".into(), member(false));
        user.memberships.insert("g_admin".into(), member(true));
        clone.memberships.insert("g_revoked".into(), member(false));
        clone.memberships.insert("g_admin".into(), member(false));
        clone.memberships.insert("g1".into(), member(true));
        user.settings
            .entry(None)
            .or_default()
            .insert("idle_session_timeout=5min".into());
        clone
            .settings
            .entry(Some("other".into()))
            .or_default()
            .insert("statement_timeout=1s".into());
        user.privileges.insert(table_priv("SELECT"), false);
        clone.privileges.insert(table_priv("SELECT"), true);
        clone.privileges.insert(table_priv("DELETE"), false);
        user.locations = Some(["a".to_string(), "b".to_string()].into());
        clone.locations = Some(["b".to_string(), "z'".to_string()].into());
        let stmts = plan(&pair(), &user, &clone, false, Some(RoleColumn::Name)).unwrap();
        let expected = [
            r#"REVOKE ADMIN OPTION FOR "g1" FROM "app_clone" CASCADE"#,
            r#"REVOKE "g_revoked" FROM "app_clone" CASCADE"#,
            r#"ALTER ROLE "app_clone" IN DATABASE "other" RESET ALL"#,
            r#"REVOKE DELETE ON TABLE public.t FROM "app_clone" CASCADE"#,
            r#"REVOKE GRANT OPTION FOR SELECT ON TABLE public.t FROM "app_clone" CASCADE"#,
            r#"DELETE FROM enkf.location_grants WHERE role = 'app_clone'::pg_catalog.name AND location = 'z'''"#,
            r#"GRANT "g_admin" TO "app_clone" WITH ADMIN OPTION"#,
            r#"ALTER ROLE "app_clone" SET "idle_session_timeout" TO '5min'"#,
            r#"INSERT INTO enkf.location_grants (role, location) VALUES ('app_clone'::pg_catalog.name, 'a')"#,
        ];
        assert_eq!(stmts, expected);
        // Nothing to do for a copy.
        assert!(plan(&pair(), &user, &user, false, Some(RoleColumn::Name))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn location_literals_follow_the_column_type() {
        assert_eq!(
            RoleColumn::Name.literal("Ab\"c"),
            r#"'Ab"c'::pg_catalog.name"#
        );
        assert_eq!(
            RoleColumn::Regrole.literal("Ab\"c"),
            r#"'"Ab""c"'::pg_catalog.regrole"#
        );
    }

    #[test]
    fn differences_name_what_differs() {
        let user = Snapshot {
            inherit: true,
            connlimit: -1,
            ..Snapshot::default()
        };
        let mut clone = user.clone();
        assert!(differences(&pair(), &user, &clone).is_empty());
        clone.memberships.insert("g_revoked".into(), member(false));
        clone.privileges.insert(table_priv("SELECT"), false);
        let d = differences(&pair(), &user, &clone);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("g_revoked") && d[0].contains("app has None"),
            "{d:?}"
        );
        assert_eq!(d[1], "SELECT ON TABLE public.t: app no, app_clone yes");
    }
}
