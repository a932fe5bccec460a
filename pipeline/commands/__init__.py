"""The user commands behind `finetune <command>`. They may import stages' pure functions and core."""
