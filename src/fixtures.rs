//! The unit tests' shared fixtures: each built once here and used by every test module that needs it.

use std::sync::Arc;

use serde_json::Value;

use crate::crd::MaterializedView;
use crate::plan::function::{Architecture, FunctionCode};
use crate::plan::iam::AwsScope;
use crate::plan::lambdas::BuiltInCode;
use crate::push::hub::ViewDirectory;
use crate::push::message::ViewRoutes;

/// The AWS scope of the plans: account 123456789012 in eu-west-1 of the `aws` partition.
pub(crate) fn scope() -> AwsScope {
    AwsScope {
        partition: "aws".into(),
        region: "eu-west-1".into(),
        account: "123456789012".into(),
    }
}

/// Built-in function code: a three-byte zip for arm64.
pub(crate) fn code() -> BuiltInCode {
    BuiltInCode {
        code: FunctionCode::Zip { bytes: Arc::new(vec![1, 2, 3]), sha256_base64: "x".into() },
        architecture: Architecture::Arm64,
    }
}

/// View `name` in namespace `games`: `player` records of the log `log` appended, with the store `store`.
pub(crate) fn view(name: &str, store: &str) -> MaterializedView {
    serde_yaml::from_str(&format!(
        "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: {name}, namespace: games}}\n\
         spec:\n  eventLogRef: {{name: log}}\n  recordTypes: [player]\n  \
         projection: {{mode: Append, key: {{partitionKey: \"P#{{id}}\"}}}}\n  store: {store}\n"
    ))
    .unwrap()
}

/// A views table's routes: `players` under the prefix `players#`, `games` under `games#`.
pub(crate) fn routes() -> ViewRoutes {
    ViewRoutes {
        views: vec![
            ("players".into(), "players#".into()),
            ("games".into(), "games#".into()),
        ],
    }
}

/// A directory with one views table, `views` in namespace `game`, holding `players` under `players#`.
pub(crate) fn players_directory() -> ViewDirectory {
    let views = ViewDirectory::default();
    views.set_table(
        "game",
        "views",
        ViewRoutes { views: vec![("players".into(), "players#".into())] },
    );
    views
}

/// The statement `sid` of the IAM policy document `doc`.
pub(crate) fn statement<'a>(doc: &'a Value, sid: &str) -> &'a Value {
    doc["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {doc}"))
}
