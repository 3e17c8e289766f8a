"""The pure data model: ids, objects, revisions, history graphs, metadata, queries, diffs, statistics, codec."""
