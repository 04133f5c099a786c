"""The questions every way in must answer identically over the store and the archive."""
QUESTIONS = [
    {},
    {"activity_id": "train"},
    {"status": "ERROR"},
    {"rank": {"$in": [1, 2]}},
    {"rank": 3, "activity_id": {"$ne": "diffuse"}},
    {"tags": "ml"},
    {"tags": {"$in": ["io", "eval"]}},
    {"activity_id": {"$regex": "^ev"}},
    {"generated": {"$exists": False}},
    {"used.model": "model-b.csv.clean"},
    {"$or": [{"activity_id": "make"}, {"status": "ERROR"}]},
    {"$and": [{"rank": {"$gte": 2}}, {"activity_id": "timestep"}]},
    {"$nor": [{"activity_id": "diffuse"}, {"activity_id": "exchange_halos"}]},
    {"parent_task_id": None},
    {"started_at": {"$gt": 0}, "thread_id": {"$gte": 0}},
]
SORTS = [None, "-rank,activity_id", "activity_id,-start_ns"]
