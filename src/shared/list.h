/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Intrusive doubly linked lists. An element has `prev` and `next` pointers (LIST_FIELDS); a list is
 * a pointer to its first element, and a queue also keeps one to its last. Insertion and removal are
 * O(1) wherever the element sits, which is what in-flight calls, suspended requests, long-poll
 * waiters and tasks need: they leave their list from a callback, in any order. A removed element has
 * both pointers NULL again, so removing twice is harmless only through LIST_IS_LINKED checks. */

#include <assert.h>

#define LIST_FIELDS(type) type *prev, *next

/* Whether item is in some list (its head is the only element without prev, so the head is asked
 * about too). */
#define LIST_IS_LINKED(head, item) ((item)->prev || (item)->next || (head) == (item))

#define LIST_PREPEND(head, item)                                        \
        do {                                                            \
                __typeof__(item) _item_ = (item);                       \
                assert(!_item_->prev && !_item_->next);                 \
                _item_->next = (head);                                  \
                if (_item_->next)                                       \
                        _item_->next->prev = _item_;                    \
                (head) = _item_;                                        \
        } while (0)

#define LIST_REMOVE(head, item)                                         \
        do {                                                            \
                __typeof__(item) _item_ = (item);                       \
                if (_item_->prev)                                       \
                        _item_->prev->next = _item_->next;              \
                else {                                                  \
                        assert((head) == _item_);                       \
                        (head) = _item_->next;                          \
                }                                                       \
                if (_item_->next)                                       \
                        _item_->next->prev = _item_->prev;              \
                _item_->prev = _item_->next = NULL;                     \
        } while (0)

/* Queues: oldest first, new ones at the tail. */
#define LIST_APPEND(head, tail, item)                                   \
        do {                                                            \
                __typeof__(item) _item_ = (item);                       \
                assert(!_item_->prev && !_item_->next);                 \
                _item_->prev = (tail);                                  \
                if (_item_->prev)                                       \
                        _item_->prev->next = _item_;                    \
                else                                                    \
                        (head) = _item_;                                \
                (tail) = _item_;                                        \
        } while (0)

#define LIST_REMOVE_QUEUED(head, tail, item)                            \
        do {                                                            \
                __typeof__(item) _queued_ = (item);                       \
                if (!_queued_->next) {                                    \
                        assert((tail) == _queued_);                       \
                        (tail) = _queued_->prev;                          \
                }                                                       \
                LIST_REMOVE(head, _queued_);                              \
        } while (0)
