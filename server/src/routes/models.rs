//! `GET /v1/models`: one card per served name.

use axum::extract::State;
use axum::Json;

use crate::protocol::{ModelCard, ModelList};
use crate::state::SharedState;

pub async fn list_models(State(state): State<SharedState>) -> Json<ModelList> {
    let data = state
        .settings
        .served_names
        .iter()
        .map(|name| ModelCard {
            id: name.clone(),
            object: "model",
            created: state.created,
            owned_by: "vllm",
            root: state.settings.model_root.clone(),
            parent: None,
            max_model_len: state.settings.max_model_len,
            permission: Vec::new(),
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}
