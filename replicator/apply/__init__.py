"""Apply: a consumer group turning change events into conditional DynamoDB writes, offsets committed after them."""
