"""Flowcept's document classes (WorkflowObject, TaskObject) as plain
attribute bags over our documents."""
