"""Where the desk's rows live: the schema, the engines, the migrations, one upsert."""
