//! The backend conformance suite: every test runs against the embedded
//! engine, and against a Qdrant server when `MLMESH_TEST_QDRANT_URL` is set
//! (skipped with a printed reason otherwise). Same requests, same answers,
//! same statuses.

mod bad_input;
mod collections;
mod points;
mod search;
mod text;
mod text_added;

use self::{bad_input::*, collections::*, points::*, search::*, text::*, text_added::*};

/// Generates `embedded::<test>` and `qdrant::<test>` for each suite function.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    let app = crate::helpers::spawn_app().await;
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
        mod qdrant {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(app) = crate::helpers::spawn_qdrant_app(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
    };
}

conformance!(
    collection_lifecycle,
    points_round_trip_with_both_id_kinds,
    search_ranks_by_each_distance,
    filters_select_by_keyword_integer_bool_range_and_id,
    delete_by_ids_and_by_filter,
    scroll_pages_through_every_point,
    search_batch_answers_in_order,
    bad_input_gets_precise_statuses,
    int8_quantization_is_kept_and_its_search_options_checked,
    bm25_scores_follow_the_collection_as_points_come_and_go,
    hybrid_search_fuses_both_rankings_by_reciprocal_rank,
    client_sparse_vectors_score_by_dot_product,
    text_search_refusals_name_the_field,
    a_text_index_is_added_in_place_and_filled_from_payloads,
    an_added_index_without_a_payload_fill_takes_new_writes,
    adding_a_text_index_refuses_what_it_cannot_do,
    writes_during_a_fill_keep_their_own_text,
);
