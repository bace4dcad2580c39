//! Reading the input: Kubernetes-style multi-document YAML files (Istio objects and the
//! endpoints document), split by `kind` and collected into one [`PolicyFile`].
//!
//! Every error names the file, the line (of the document, or of the field when the YAML
//! parser knows it) and the field path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use mesh_core::istio::networking::Object;
use mesh_core::policy_file::{PolicyError, PolicyFile};
use mesh_core::Snapshot;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Where an object came from, to point translation errors back at it.
#[derive(Debug, Clone)]
struct Origin {
    file: String,
    line: usize,
    name: String,
}

/// The collected input, with the origin of every object.
#[derive(Debug, Default)]
pub struct Input {
    /// Everything, as one policy file.
    pub policy: PolicyFile,
    virtual_services: Vec<Origin>,
    destination_rules: Vec<Origin>,
    peer_authentications: Vec<Origin>,
    authorization_policies: Vec<Origin>,
    /// The files read, for display.
    pub files: Vec<PathBuf>,
    /// Documents skipped (kinds the control plane does not serve), for display.
    pub skipped: Vec<String>,
    /// What each file declares (`VirtualService default/reviews`, `service reviews (3
    /// endpoints)`), by file: what goes away when the file is deleted.
    pub declared: BTreeMap<String, Vec<String>>,
}

/// What the input makes the control plane serve.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Served {
    /// The xDS resources.
    pub resources: crate::envoy::Resources,
    /// Each workload's inbound listener and policy.
    pub inbound: Vec<crate::envoy::InboundWorkload>,
    /// What each file declares.
    pub declared: BTreeMap<String, Vec<String>>,
}

/// A rejected input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputError(pub Vec<String>);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for InputError {}

/// Only what is needed to dispatch a document.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "apiVersion")]
    api_version: Option<String>,
}

/// The YAML files under `paths` (a directory contributes its `.yaml`/`.yml` files, sorted).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(entries) => {
                    let mut files: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| {
                            f.extension()
                                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                        })
                        .collect();
                    files.sort();
                    out.extend(files);
                }
                Err(e) => errors.push(format!("{}: cannot read directory: {e}", p.display())),
            }
        } else {
            out.push(p.clone());
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(InputError(errors))
    }
}

/// Reads every file under `paths` and collects the documents. A file with no YAML
/// content (0 bytes, whitespace, only comments or `---`) is an error, not "nothing": a
/// truncated file must not silently remove what it declared (deleting the file does that,
/// deliberately).
pub fn load(paths: &[PathBuf]) -> Result<Input, InputError> {
    let files = expand(paths)?;
    let mut input = Input::default();
    let mut errors = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) if mesh_core::policy_file::is_blank_yaml(&text) => errors.push(format!(
                "{name}: the file is empty (nothing but whitespace, comments or `---`); \
                 refusing it, as it would remove everything it declared — delete the file \
                 to remove its objects deliberately"
            )),
            Ok(text) => {
                input.declared.entry(name.clone()).or_default();
                input.add_text(&text, &name, &mut errors);
            }
            Err(e) => errors.push(format!("{name}: cannot read: {e}")),
        }
    }
    input.files = files;
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(InputError(errors))
    }
}

/// Splits YAML text into documents: `(first line, text)`, lines counted from 1.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        let is_separator = trimmed == "---"
            || trimmed.starts_with("--- ")
            || trimmed.starts_with("---\t")
            || trimmed == "...";
        if is_separator {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            // Content after `--- ` on the same line starts the next document.
            if let Some(rest) = trimmed.strip_prefix("---") {
                let rest = rest.trim();
                if !rest.is_empty() && !rest.starts_with('#') {
                    start = i + 1;
                    current.push_str(rest);
                    current.push('\n');
                }
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// Parses one document as `T`; errors carry the file, the absolute line and the field path.
fn parse<T: DeserializeOwned>(text: &str, file: &str, first_line: usize) -> Result<T, String> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut message = inner.to_string();
        if let Some(idx) = message.find(" at line ") {
            message.truncate(idx);
        }
        // serde_norway starts with its own path (`spec.tcp: unknown field`): once is enough.
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.contains(' ') && path.starts_with(prefix) {
                message = rest.to_owned();
            }
        }
        let at = match inner.location() {
            Some(l) => format!("{}:{}", first_line + l.line() - 1, l.column()),
            None => first_line.to_string(),
        };
        format!("{file}:{at}: {path}: {message}")
    })
}

impl Input {
    /// Collects the documents of one file's text, as [`load`] does for each file it reads;
    /// `file` names it in errors. For text already in memory (tools, the fuzz targets).
    pub fn from_text(text: &str, file: &str) -> Result<Self, InputError> {
        let mut input = Self::default();
        let mut errors = Vec::new();
        input.add_text(text, file, &mut errors);
        if errors.is_empty() {
            Ok(input)
        } else {
            Err(InputError(errors))
        }
    }

    fn add_text(&mut self, text: &str, file: &str, errors: &mut Vec<String>) {
        for (line, doc) in documents(text) {
            if let Err(e) = self.add_document(&doc, file, line) {
                errors.push(e);
            }
        }
    }

    fn add_document(&mut self, doc: &str, file: &str, line: usize) -> Result<(), String> {
        let head: Head = parse(doc, file, line)?;
        let api = head.api_version.as_deref().unwrap_or("");
        let group_ok = |group: &str| api.is_empty() || api.starts_with(group);
        match head.kind.as_deref() {
            None => {
                // The endpoints document: the policy-file format (services, and optionally
                // lists of Istio objects and the namespace).
                let part: PolicyFile = parse(doc, file, line)?;
                self.declare_part(&part, file);
                self.merge(part, file, line);
            }
            Some("VirtualService") if group_ok("networking.istio.io/") => {
                let obj: Object<_> = parse(doc, file, line)?;
                self.declare(file, "VirtualService", &obj.metadata);
                self.virtual_services
                    .push(origin(file, line, &obj.metadata));
                self.policy.virtual_services.push(obj);
            }
            Some("DestinationRule") if group_ok("networking.istio.io/") => {
                let obj: Object<_> = parse(doc, file, line)?;
                self.declare(file, "DestinationRule", &obj.metadata);
                self.destination_rules
                    .push(origin(file, line, &obj.metadata));
                self.policy.destination_rules.push(obj);
            }
            Some("PeerAuthentication") if group_ok("security.istio.io/") => {
                let obj: Object<_> = parse(doc, file, line)?;
                self.declare(file, "PeerAuthentication", &obj.metadata);
                self.peer_authentications
                    .push(origin(file, line, &obj.metadata));
                self.policy.peer_authentications.push(obj);
            }
            Some("AuthorizationPolicy") if group_ok("security.istio.io/") => {
                let obj: Object<_> = parse(doc, file, line)?;
                self.declare(file, "AuthorizationPolicy", &obj.metadata);
                self.authorization_policies
                    .push(origin(file, line, &obj.metadata));
                self.policy.authorization_policies.push(obj);
            }
            Some(kind) if api.contains("istio.io") => {
                return Err(format!(
                    "{file}:{line}: kind: {kind} ({api}) is not supported (supported: \
                     VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy)"
                ));
            }
            Some(kind) => self.skipped.push(format!("{file}:{line}: {kind}")),
        }
        Ok(())
    }

    fn declare(&mut self, file: &str, kind: &str, meta: &mesh_core::istio::networking::ObjectMeta) {
        let name = match &meta.namespace {
            Some(ns) => format!("{ns}/{}", meta.name),
            None => meta.name.clone(),
        };
        self.declared
            .entry(file.to_owned())
            .or_default()
            .push(format!("{kind} {name}"));
    }

    /// Records what a policy-format document declares.
    fn declare_part(&mut self, part: &PolicyFile, file: &str) {
        for s in &part.services {
            self.declared
                .entry(file.to_owned())
                .or_default()
                .push(format!(
                    "service {} ({} endpoints)",
                    s.name,
                    s.endpoints.len()
                ));
        }
        let lists = [
            (
                "VirtualService",
                part.virtual_services
                    .iter()
                    .map(|o| &o.metadata)
                    .collect::<Vec<_>>(),
            ),
            (
                "DestinationRule",
                part.destination_rules.iter().map(|o| &o.metadata).collect(),
            ),
            (
                "PeerAuthentication",
                part.peer_authentications
                    .iter()
                    .map(|o| &o.metadata)
                    .collect(),
            ),
            (
                "AuthorizationPolicy",
                part.authorization_policies
                    .iter()
                    .map(|o| &o.metadata)
                    .collect(),
            ),
        ];
        for (kind, metas) in lists {
            for meta in metas {
                self.declare(file, kind, meta);
            }
        }
    }

    fn merge(&mut self, part: PolicyFile, file: &str, line: usize) {
        let at = |i: usize, what: &str| Origin {
            file: file.to_owned(),
            line,
            name: format!("{what}[{i}] of the endpoints document"),
        };
        let p = &mut self.policy;
        for (i, o) in part.virtual_services.into_iter().enumerate() {
            self.virtual_services.push(at(i, "virtualServices"));
            p.virtual_services.push(o);
        }
        for (i, o) in part.destination_rules.into_iter().enumerate() {
            self.destination_rules.push(at(i, "destinationRules"));
            p.destination_rules.push(o);
        }
        for (i, o) in part.peer_authentications.into_iter().enumerate() {
            self.peer_authentications.push(at(i, "peerAuthentications"));
            p.peer_authentications.push(o);
        }
        for (i, o) in part.authorization_policies.into_iter().enumerate() {
            self.authorization_policies
                .push(at(i, "authorizationPolicies"));
            p.authorization_policies.push(o);
        }
        p.services.extend(part.services);
        p.namespace = part.namespace.or(p.namespace.take());
        p.domain_suffix = part.domain_suffix.or(p.domain_suffix.take());
        p.trust_domain = part.trust_domain.or(p.trust_domain.take());
        p.auto_mtls = part.auto_mtls.or(p.auto_mtls);
        p.root_namespace = part.root_namespace.or(p.root_namespace.take());
        p.workload = part.workload.or(p.workload.take());
        p.certificates = part.certificates.or(p.certificates.take());
    }

    /// Translates into the mesh model; errors are pointed back at their source object.
    ///
    /// Auto mTLS is on unless the input says `autoMtls: false`, as in Istio: clients get
    /// ISTIO_MUTUAL, with the certificate provider instance `default`, to every service
    /// that has service accounts and no DestinationRule saying otherwise (a static policy
    /// file turns it on only with `certificates:`; the control plane has none of its own
    /// and serves workloads that have theirs).
    pub fn to_snapshot(&self) -> Result<Snapshot, InputError> {
        let with_default;
        let policy = if self.policy.auto_mtls.is_some() {
            &self.policy
        } else {
            let mut p = self.policy.clone();
            p.auto_mtls = Some(true);
            with_default = p;
            &with_default
        };
        policy.to_snapshot("input").map_err(|e| match e {
            PolicyError::Invalid { errors, .. } => {
                InputError(errors.iter().map(|e| self.locate(&e.to_string())).collect())
            }
            PolicyError::Inbound { reason, .. } => {
                InputError(vec![format!("inbound policy: {}", self.locate(&reason))])
            }
            other => InputError(vec![other.to_string()]),
        })
    }

    /// The resources to serve: the outbound side from the snapshot, plus an inbound
    /// listener per workload address.
    pub fn to_resources(&self) -> Result<crate::envoy::Resources, InputError> {
        self.to_served().map(|s| s.resources)
    }

    /// The resources to serve, with the inbound policy of every workload and what each
    /// file declares (what the server compares between pushes).
    pub fn to_served(&self) -> Result<Served, InputError> {
        let snapshot = self.to_snapshot()?;
        let mut resources = crate::envoy::Resources::from_snapshot(&snapshot);
        let inbound = crate::envoy::inbound_workloads(&self.policy).map_err(|reason| {
            InputError(vec![format!("inbound policy: {}", self.locate(&reason))])
        })?;
        resources.add_inbound_workloads(&inbound);
        let catch_all = crate::envoy::namespace_default(&self.policy).map_err(|reason| {
            InputError(vec![format!("inbound policy: {}", self.locate(&reason))])
        })?;
        resources.add_sidecar(&snapshot, &inbound, &catch_all);
        Ok(Served {
            resources,
            inbound,
            declared: self.declared.clone(),
        })
    }

    /// Rewrites a leading `virtualServices[3]` (the collected list) into the source file,
    /// line and object name.
    fn locate(&self, message: &str) -> String {
        let lists: [(&str, &str, &[Origin]); 4] = [
            ("virtualServices", "VirtualService", &self.virtual_services),
            (
                "destinationRules",
                "DestinationRule",
                &self.destination_rules,
            ),
            (
                "peerAuthentications",
                "PeerAuthentication",
                &self.peer_authentications,
            ),
            (
                "authorizationPolicies",
                "AuthorizationPolicy",
                &self.authorization_policies,
            ),
        ];
        for (prefix, kind, origins) in lists {
            let Some(rest) = message
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('['))
            else {
                continue;
            };
            let Some((index, rest)) = rest.split_once(']') else {
                continue;
            };
            let Some(o) = index.parse::<usize>().ok().and_then(|i| origins.get(i)) else {
                continue;
            };
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            return format!("{}:{}: {kind} {}: {rest}", o.file, o.line, o.name);
        }
        message.to_owned()
    }
}

fn origin(file: &str, line: usize, meta: &mesh_core::istio::networking::ObjectMeta) -> Origin {
    Origin {
        file: file.to_owned(),
        line,
        name: if meta.name.is_empty() {
            "(unnamed)".to_owned()
        } else {
            meta.name.clone()
        },
    }
}

/// A fingerprint of the files' contents (and their set), to notice any change.
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match expand(paths) {
        Ok(files) => {
            for f in files {
                f.hash(&mut h);
                match std::fs::read(&f) {
                    Ok(bytes) => bytes.hash(&mut h),
                    Err(e) => e.kind().to_string().hash(&mut h),
                }
            }
        }
        Err(e) => e.0.hash(&mut h),
    }
    h.finish()
}

#[cfg(test)]
mod tests;
